"""data lifecycle: customers kept after their host row is deleted, anonymous messages

``engage_customers.deleted_at`` marks customers tracked with ``on_delete="keep"``
whose host row is gone; ``engage_messages.customer_id`` becomes nullable (set to
NULL when a customer is forgotten: the message stays for counts).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

import flask_engage.models

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MESSAGE_CUSTOMER_FK = "fk_engage_messages_customer_id_engage_customers"


def upgrade() -> None:
    with op.batch_alter_table("engage_customers") as batch:
        batch.add_column(
            sa.Column("deleted_at", flask_engage.models.UTCDateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("engage_messages") as batch:
        batch.drop_constraint(MESSAGE_CUSTOMER_FK, type_="foreignkey")
        batch.alter_column("customer_id", existing_type=BIG_ID, nullable=True)
        batch.create_foreign_key(
            MESSAGE_CUSTOMER_FK, "engage_customers", ["customer_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    # Messages of forgotten customers cannot point at anyone again: they go.
    op.execute("DELETE FROM engage_messages WHERE customer_id IS NULL")
    with op.batch_alter_table("engage_messages") as batch:
        batch.drop_constraint(MESSAGE_CUSTOMER_FK, type_="foreignkey")
        batch.alter_column("customer_id", existing_type=BIG_ID, nullable=False)
        batch.create_foreign_key(
            MESSAGE_CUSTOMER_FK, "engage_customers", ["customer_id"], ["id"], ondelete="CASCADE"
        )
    with op.batch_alter_table("engage_customers") as batch:
        batch.drop_column("deleted_at")
