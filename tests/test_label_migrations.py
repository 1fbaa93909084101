"""The label database is made and upgraded only by the shipped Alembic scripts, on SQLite and
PostgreSQL: a database at an older revision keeps its data through an upgrade."""

from __future__ import annotations

from sqlalchemy import inspect, text

from rlhfkit.label import service
from rlhfkit.label.db import Base, Database, current_revision, upgrade


def test_an_old_database_survives_the_upgrade(db_url):
    database = Database(db_url)
    upgrade(database.engine, "0001")
    assert current_revision(database.engine) == "0001"
    assert "chats" not in inspect(database.engine).get_table_names()
    with database.engine.begin() as conn:  # data written by the 0001 schema
        conn.execute(
            text(
                "INSERT INTO users (name, role, password_hash, created_at) "
                "VALUES ('old', 'annotator', 'x', CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO projects (name, kind, mode, guidelines, overlap, settings, created_at) "
                "VALUES ('kept', 'pairwise', 'helpful', '', 1, '{}', CURRENT_TIMESTAMP)"
            )
        )
    database.upgrade()
    assert current_revision(database.engine) == "0002"
    with database.session() as db:
        assert service.user_by_name(db, "old").role == "annotator"
        project = service.get_project(db, "kept")
        assert project.kind == "pairwise"
        # the new schema works on the old rows
        item = service.import_items(
            db,
            project,
            [service.parse_item({"prompt": "p", "responses": ["a", "b"]}, "pairwise", "t")],
        )[0]
        assert item.chat_id is None
    database.upgrade()  # idempotent
    database.close()


def test_the_migrations_build_exactly_the_models_tables(db_url):
    database = Database(db_url)
    database.upgrade()
    inspector = inspect(database.engine)
    tables = set(inspector.get_table_names()) - {"alembic_version"}
    assert tables == set(Base.metadata.tables)
    for name, table in Base.metadata.tables.items():
        columns = {c["name"] for c in inspector.get_columns(name)}
        assert columns == {c.name for c in table.columns}, name
    database.close()
