"""Alembic environment for the label app: runs on the connection `rlhfkit.label.db.upgrade`
passes in (`config.attributes["connection"]`), or on `sqlalchemy.url` when run by `alembic`."""

from alembic import context
from sqlalchemy import create_engine

from rlhfkit.label.db import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    connection = create_engine(config.get_main_option("sqlalchemy.url")).connect()
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
