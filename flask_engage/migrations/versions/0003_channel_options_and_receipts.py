"""channel options on broadcasts, delivery receipts on messages

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("engage_broadcasts") as batch:
        batch.add_column(sa.Column("options", _json(), nullable=True))
    with op.batch_alter_table("engage_messages") as batch:
        batch.add_column(sa.Column("receipt", _json(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("engage_messages") as batch:
        batch.drop_column("receipt")
    with op.batch_alter_table("engage_broadcasts") as batch:
        batch.drop_column("options")
