"""lists: manual lists, their members and subscription history; broadcasts to lists,
automations triggered by a list

``engage_lists``, ``engage_list_members`` and ``engage_list_changes`` are new;
``engage_broadcasts.list_ids`` holds a broadcast's lists beside its segments;
``engage_automations`` gains ``trigger_list_id`` (``trigger_kind`` grows longer for
``subscribes``/``unsubscribes``; ``trigger_segment_id`` is nullable since 0006).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import flask_engage.models

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = flask_engage.models.UTCDateTime(timezone=True)
LIST_FK = "fk_engage_automations_trigger_list_id_engage_lists"


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "engage_lists",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("slug", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("double_optin", sa.Boolean(), nullable=False),
        sa.Column("redirect_url", sa.String(length=2048), nullable=True),
        sa.Column("archived_at", TIME, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engage_lists")),
        sa.UniqueConstraint("name", name=op.f("uq_engage_lists_name")),
        sa.UniqueConstraint("slug", name=op.f("uq_engage_lists_slug")),
    )
    op.create_table(
        "engage_list_members",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", BIG_ID, nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("attributes", _json(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.Column("subscribed_at", TIME, nullable=True),
        sa.Column("unsubscribed_at", TIME, nullable=True),
        sa.Column("confirm_sent_at", TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["engage_customers.id"],
            name=op.f("fk_engage_list_members_customer_id_engage_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["engage_lists.id"],
            name=op.f("fk_engage_list_members_list_id_engage_lists"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engage_list_members")),
        sa.UniqueConstraint("list_id", "customer_id", name="uq_engage_list_members_customer"),
    )
    op.create_index(
        "ix_engage_list_members_customer", "engage_list_members", ["customer_id"], unique=False
    )
    op.create_index(
        "ix_engage_list_members_list_status",
        "engage_list_members",
        ["list_id", "status", "customer_id"],
        unique=False,
    )
    op.create_table(
        "engage_list_changes",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", BIG_ID, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("computation", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["engage_customers.id"],
            name=op.f("fk_engage_list_changes_customer_id_engage_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["engage_lists.id"],
            name=op.f("fk_engage_list_changes_list_id_engage_lists"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engage_list_changes")),
    )
    op.create_index(
        "ix_engage_list_changes_list_at", "engage_list_changes", ["list_id", "at"], unique=False
    )
    op.create_index(
        "ix_engage_list_changes_computation",
        "engage_list_changes",
        ["computation"],
        unique=False,
    )
    op.create_index(
        "ix_engage_list_changes_customer", "engage_list_changes", ["customer_id"], unique=False
    )

    with op.batch_alter_table("engage_broadcasts") as batch:
        batch.add_column(sa.Column("list_ids", _json(), nullable=True))
    op.execute("UPDATE engage_broadcasts SET list_ids = '[]'")
    with op.batch_alter_table("engage_broadcasts") as batch:
        batch.alter_column("list_ids", existing_type=_json(), nullable=False)

    with op.batch_alter_table("engage_automations") as batch:
        batch.alter_column(
            "trigger_kind",
            existing_type=sa.String(length=8),
            type_=sa.String(length=16),
            existing_nullable=False,
        )
        batch.add_column(sa.Column("trigger_list_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            LIST_FK, "engage_lists", ["trigger_list_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_index(
            "ix_engage_automations_trigger_list_id", ["trigger_list_id"], unique=False
        )


def downgrade() -> None:
    # Automations started by a list have no segment to fall back on: they go.
    listed = "SELECT id FROM engage_automations WHERE trigger_list_id IS NOT NULL"
    op.execute(f"UPDATE engage_messages SET automation_id = NULL WHERE automation_id IN ({listed})")
    op.execute(f"DELETE FROM engage_automation_runs WHERE automation_id IN ({listed})")
    op.execute("DELETE FROM engage_automations WHERE trigger_list_id IS NOT NULL")
    with op.batch_alter_table("engage_automations") as batch:
        batch.drop_index("ix_engage_automations_trigger_list_id")
        batch.drop_constraint(LIST_FK, type_="foreignkey")
        batch.drop_column("trigger_list_id")
        batch.alter_column(
            "trigger_kind",
            existing_type=sa.String(length=16),
            type_=sa.String(length=8),
            existing_nullable=False,
        )
    with op.batch_alter_table("engage_broadcasts") as batch:
        batch.drop_column("list_ids")
    op.drop_table("engage_list_changes")
    op.drop_table("engage_list_members")
    op.drop_table("engage_lists")
