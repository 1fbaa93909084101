"""The label app's tables (SQLAlchemy 2) and how a database is opened and migrated.

- One schema for SQLite and PostgreSQL. SQLite is opened in WAL mode with `synchronous=FULL`, so a
  commit is on disk before the client gets its 2xx (the load benchmark kills the server with
  SIGKILL and checks), and a busy timeout, so concurrent writers queue instead of failing.
- The schema is created and upgraded only by the Alembic scripts shipped in
  `rlhfkit/label/migrations` (`upgrade`), never by `create_all`: a database made by an older
  rlhfkit is upgraded in place when `rlhfkit label serve` starts.
- A judgment is written in the same transaction that closes its assignment, and
  `judgments.assignment_id` is unique: an answer is stored exactly once or not at all.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_URL = "sqlite:///label.db"
MAX_ID = 2**31 - 1  # the largest id PostgreSQL's INTEGER holds (SQLite's holds 2**63 - 1)


def valid_id(value: int) -> bool:
    """Whether `value` can be a row id in both databases; a larger number overflows the
    driver's integer (SQLite) or the column type (PostgreSQL) instead of matching nothing."""
    return 1 <= value <= MAX_ID


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Setting(Base):
    """Server-wide values that must survive a restart (the cookie-signing key)."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # "admin" or "annotator"
    password_hash: Mapped[str] = mapped_column(Text)
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # "pairwise", "ranking", "chat" or "rating"
    mode: Mapped[str] = mapped_column(String(16), default="helpful")  # or "red_team"
    guidelines: Mapped[str] = mapped_column(Text, default="")
    overlap: Mapped[int] = mapped_column(Integer, default=1)  # annotators per item
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # chat policies, aspects
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


class Item(Base):
    """A prompt (a messages list) and its candidate replies, with an optional known answer."""

    __tablename__ = "items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # import order; export follows it
    external_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    prompt: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    candidates: Mapped[list[str]] = mapped_column(JSON)
    # best-first indices; for a rating item, the known score per aspect
    gold: Mapped[list[int] | dict[str, int] | None] = mapped_column(JSON, nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    chat_id: Mapped[int | None] = mapped_column(ForeignKey("chats.id"), nullable=True)


class Assignment(Base):
    """One item given to one annotator, with the order its candidates are shown in (drawn when
    the assignment is made, so the page and the stored judgment agree)."""

    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("item_id", "user_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    display_order: Mapped[list[int]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(8), default="open")  # "open" or "done"
    served_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


class Judgment(Base):
    """An annotator's answer. `choice` is a candidate index (None: tie / can't tell), `strength`
    1–3 (slightly, clearly, much better), `ranking` candidate indices best first, `scores` a
    rating per aspect (thumbs: 1 up, 0 down; Likert: 1–5 or 1–7)."""

    __tablename__ = "judgments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"), unique=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    display_order: Mapped[list[int]] = mapped_column(JSON)
    choice: Mapped[int | None] = mapped_column(Integer, nullable=True)
    strength: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ranking: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)
    scores: Mapped[dict[str, int] | None] = mapped_column(JSON, nullable=True)  # rating kind
    flags: Mapped[list[str]] = mapped_column(JSON, default=list)
    note: Mapped[str] = mapped_column(Text, default="")
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


class Chat(Base):
    """A live conversation in a chat project: `messages` so far; `status` is "human" (waiting
    for the annotator's turn), "generating", "choosing" (two replies wait as `item_id`) or
    "error"."""

    __tablename__ = "chats"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    messages: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default="human")
    item_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


class Database:
    """An engine and its session factory for one URL.

    On SQLite, Python's driver begins a transaction only at the first INSERT/UPDATE/DELETE, so
    a write transaction takes the write lock with its first statement (waiting on the busy
    timeout if another writer holds it) and never upgrades a stale read snapshot; that is why
    `service.submit` writes first (the conditional UPDATE) and reads the chat afterwards.
    """

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(self.url)
        self.session = sessionmaker(self.engine, expire_on_commit=False)

    def upgrade(self) -> None:
        upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()


def normalise_url(url: str) -> str:
    """A bare path is a SQLite file; `postgresql://` uses psycopg 3 (the driver rlhfkit installs)."""
    if "://" not in url:
        return f"sqlite:///{url}"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # as many connections as the server has request threads (anyio's default: 40)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=20,
            max_overflow=30,
        )

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_size=20, max_overflow=30, pool_recycle=3600)


def alembic_config(connection: Any = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` with the shipped Alembic scripts."""
    from alembic import command

    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
