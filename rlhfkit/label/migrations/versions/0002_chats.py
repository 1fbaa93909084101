"""Live chat comparisons: a chats table, and items that remember the chat they came from.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chats",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("messages", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("item_id", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_chats_project_id", "chats", ["project_id"])
    op.create_index("ix_chats_user_id", "chats", ["user_id"])
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("chat_id", sa.Integer, nullable=True))
        batch.create_foreign_key("fk_items_chat_id", "chats", ["chat_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_constraint("fk_items_chat_id", type_="foreignkey")
        batch.drop_column("chat_id")
    op.drop_table("chats")
