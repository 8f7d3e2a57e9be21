"""initial engage tables

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import flask_engage.models

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "engage_broadcasts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column(
            "segment_ids",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("send_to_unsubscribed", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("scheduled_at", flask_engage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", flask_engage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", flask_engage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", flask_engage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engage_broadcasts")),
    )
    op.create_table(
        "engage_customers",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column(
            "attributes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", flask_engage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", flask_engage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engage_customers")),
        sa.UniqueConstraint("external_id", name=op.f("uq_engage_customers_external_id")),
    )
    with op.batch_alter_table("engage_customers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_engage_customers_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_engage_customers_email"), ["email"], unique=False)

    op.create_table(
        "engage_definitions",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("first_seen", flask_engage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen", flask_engage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", "scope", "name", name=op.f("pk_engage_definitions")),
    )
    op.create_table(
        "engage_outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("task", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("created_at", flask_engage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engage_outbox")),
    )
    with op.batch_alter_table("engage_outbox", schema=None) as batch_op:
        batch_op.create_index("ix_engage_outbox_task_id", ["task", "id"], unique=False)

    op.create_table(
        "engage_segments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("slug", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "filters",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("is_time_based", sa.Boolean(), nullable=False),
        sa.Column("created_at", flask_engage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", flask_engage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "last_computed_at", flask_engage.models.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("last_duration_ms", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("member_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engage_segments")),
        sa.UniqueConstraint("name", name=op.f("uq_engage_segments_name")),
        sa.UniqueConstraint("slug", name=op.f("uq_engage_segments_slug")),
    )
    op.create_table(
        "engage_state",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", flask_engage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_engage_state")),
    )
    op.create_table(
        "engage_automations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("trigger_kind", sa.String(length=8), nullable=False),
        sa.Column("trigger_segment_id", sa.Integer(), nullable=False),
        sa.Column(
            "steps",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("reentry", sa.Boolean(), nullable=False),
        sa.Column("exit_on_leave", sa.Boolean(), nullable=False),
        sa.Column("created_at", flask_engage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", flask_engage.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["trigger_segment_id"],
            ["engage_segments.id"],
            name=op.f("fk_engage_automations_trigger_segment_id_engage_segments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engage_automations")),
    )
    with op.batch_alter_table("engage_automations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_engage_automations_trigger_segment_id"),
            ["trigger_segment_id"],
            unique=False,
        )

    op.create_table(
        "engage_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column(
            "properties",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("occurred_at", flask_engage.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["engage_customers.id"],
            name=op.f("fk_engage_events_customer_id_engage_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engage_events")),
    )
    with op.batch_alter_table("engage_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_engage_events_customer_name_time",
            ["customer_id", "name", "occurred_at"],
            unique=False,
        )
        batch_op.create_index("ix_engage_events_name_time", ["name", "occurred_at"], unique=False)

    op.create_table(
        "engage_membership_changes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("segment_id", sa.Integer(), nullable=False),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("at", flask_engage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("computation", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["engage_customers.id"],
            name=op.f("fk_engage_membership_changes_customer_id_engage_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["engage_segments.id"],
            name=op.f("fk_engage_membership_changes_segment_id_engage_segments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engage_membership_changes")),
    )
    with op.batch_alter_table("engage_membership_changes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_engage_membership_changes_computation", ["computation"], unique=False
        )
        batch_op.create_index(
            "ix_engage_membership_changes_segment_at", ["segment_id", "at"], unique=False
        )

    op.create_table(
        "engage_memberships",
        sa.Column("segment_id", sa.Integer(), nullable=False),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("joined_at", flask_engage.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["engage_customers.id"],
            name=op.f("fk_engage_memberships_customer_id_engage_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["engage_segments.id"],
            name=op.f("fk_engage_memberships_segment_id_engage_segments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("segment_id", "customer_id", name=op.f("pk_engage_memberships")),
    )
    with op.batch_alter_table("engage_memberships", schema=None) as batch_op:
        batch_op.create_index("ix_engage_memberships_customer", ["customer_id"], unique=False)

    op.create_table(
        "engage_push_subscriptions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("endpoint", sa.String(length=2048), nullable=False),
        sa.Column("p256dh", sa.String(length=255), nullable=False),
        sa.Column("auth", sa.String(length=255), nullable=False),
        sa.Column("created_at", flask_engage.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["engage_customers.id"],
            name=op.f("fk_engage_push_subscriptions_customer_id_engage_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engage_push_subscriptions")),
        sa.UniqueConstraint("endpoint", name=op.f("uq_engage_push_subscriptions_endpoint")),
    )
    with op.batch_alter_table("engage_push_subscriptions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_engage_push_subscriptions_customer_id"), ["customer_id"], unique=False
        )

    op.create_table(
        "engage_segment_snapshots",
        sa.Column("segment_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["engage_segments.id"],
            name=op.f("fk_engage_segment_snapshots_segment_id_engage_segments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("segment_id", "day", name=op.f("pk_engage_segment_snapshots")),
    )
    op.create_table(
        "engage_unsubscriptions",
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("created_at", flask_engage.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["engage_customers.id"],
            name=op.f("fk_engage_unsubscriptions_customer_id_engage_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("customer_id", "channel", name=op.f("pk_engage_unsubscriptions")),
    )
    op.create_table(
        "engage_automation_runs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("automation_id", sa.Integer(), nullable=False),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("entry", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("due_at", flask_engage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", flask_engage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", flask_engage.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["automation_id"],
            ["engage_automations.id"],
            name=op.f("fk_engage_automation_runs_automation_id_engage_automations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["engage_customers.id"],
            name=op.f("fk_engage_automation_runs_customer_id_engage_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engage_automation_runs")),
        sa.UniqueConstraint("automation_id", "customer_id", "entry", name="uq_engage_runs_entry"),
    )
    with op.batch_alter_table("engage_automation_runs", schema=None) as batch_op:
        batch_op.create_index("ix_engage_runs_status_due", ["status", "due_at"], unique=False)

    op.create_table(
        "engage_messages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("broadcast_id", sa.Integer(), nullable=True),
        sa.Column("automation_id", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", flask_engage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", flask_engage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("claim", sa.String(length=32), nullable=True),
        sa.Column("sent_at", flask_engage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("read_at", flask_engage.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["automation_id"],
            ["engage_automations.id"],
            name=op.f("fk_engage_messages_automation_id_engage_automations"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["broadcast_id"],
            ["engage_broadcasts.id"],
            name=op.f("fk_engage_messages_broadcast_id_engage_broadcasts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["engage_customers.id"],
            name=op.f("fk_engage_messages_customer_id_engage_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["engage_automation_runs.id"],
            name=op.f("fk_engage_messages_run_id_engage_automation_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engage_messages")),
        sa.UniqueConstraint("broadcast_id", "customer_id", name="uq_engage_messages_broadcast"),
        sa.UniqueConstraint("run_id", "step", name="uq_engage_messages_run_step"),
    )
    with op.batch_alter_table("engage_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_engage_messages_automation_id"), ["automation_id"], unique=False
        )
        batch_op.create_index(
            "ix_engage_messages_customer", ["customer_id", "channel", "created_at"], unique=False
        )
        batch_op.create_index("ix_engage_messages_status", ["status", "id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("engage_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_engage_messages_status")
        batch_op.drop_index("ix_engage_messages_customer")
        batch_op.drop_index(batch_op.f("ix_engage_messages_automation_id"))

    op.drop_table("engage_messages")
    with op.batch_alter_table("engage_automation_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_engage_runs_status_due")

    op.drop_table("engage_automation_runs")
    op.drop_table("engage_unsubscriptions")
    op.drop_table("engage_segment_snapshots")
    with op.batch_alter_table("engage_push_subscriptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_engage_push_subscriptions_customer_id"))

    op.drop_table("engage_push_subscriptions")
    with op.batch_alter_table("engage_memberships", schema=None) as batch_op:
        batch_op.drop_index("ix_engage_memberships_customer")

    op.drop_table("engage_memberships")
    with op.batch_alter_table("engage_membership_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_engage_membership_changes_segment_at")
        batch_op.drop_index("ix_engage_membership_changes_computation")

    op.drop_table("engage_membership_changes")
    with op.batch_alter_table("engage_events", schema=None) as batch_op:
        batch_op.drop_index("ix_engage_events_name_time")
        batch_op.drop_index("ix_engage_events_customer_name_time")

    op.drop_table("engage_events")
    with op.batch_alter_table("engage_automations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_engage_automations_trigger_segment_id"))

    op.drop_table("engage_automations")
    op.drop_table("engage_state")
    op.drop_table("engage_segments")
    with op.batch_alter_table("engage_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_engage_outbox_task_id")

    op.drop_table("engage_outbox")
    op.drop_table("engage_definitions")
    with op.batch_alter_table("engage_customers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_engage_customers_email"))
        batch_op.drop_index(batch_op.f("ix_engage_customers_created_at"))

    op.drop_table("engage_customers")
    op.drop_table("engage_broadcasts")
