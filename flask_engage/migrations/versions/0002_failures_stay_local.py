"""failures stay local: retry and park columns on outbox items, runs and messages

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

import flask_engage.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("engage_outbox") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(
            sa.Column("available_at", flask_engage.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch.add_column(
            sa.Column("parked_at", flask_engage.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
    with op.batch_alter_table("engage_automation_runs") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
    with op.batch_alter_table("engage_messages") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(
            sa.Column("retry_at", flask_engage.models.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("engage_messages") as batch:
        batch.drop_column("retry_at")
        batch.drop_column("attempts")
    with op.batch_alter_table("engage_automation_runs") as batch:
        batch.drop_column("error")
        batch.drop_column("attempts")
    with op.batch_alter_table("engage_outbox") as batch:
        batch.drop_column("error")
        batch.drop_column("parked_at")
        batch.drop_column("available_at")
        batch.drop_column("attempts")
