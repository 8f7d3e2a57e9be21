"""engagement: opens and clicks on messages, event triggers, branching automations

``engage_messages`` gains the first open and first click of each message, by a
person and by a machine. ``engage_automations`` gains an event trigger
(``trigger_event``, ``trigger_where``; ``trigger_segment_id`` becomes nullable) and
the ``watched_events`` it reacts to. ``engage_automation_runs``
gains the ``event_id`` that started a run (unique per automation) and
``step_reached_at``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import flask_engage.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MESSAGE_TIMES = ("opened_at", "machine_opened_at", "clicked_at", "machine_clicked_at")


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _time(name: str) -> sa.Column:
    return sa.Column(name, flask_engage.models.UTCDateTime(timezone=True), nullable=True)


def upgrade() -> None:
    with op.batch_alter_table("engage_messages") as batch:
        for name in MESSAGE_TIMES:
            batch.add_column(_time(name))
    with op.batch_alter_table("engage_automations") as batch:
        batch.alter_column("trigger_segment_id", existing_type=sa.Integer(), nullable=True)
        batch.add_column(sa.Column("trigger_event", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("trigger_where", _json(), nullable=True))
        batch.add_column(sa.Column("watched_events", _json(), nullable=True))
    with op.batch_alter_table("engage_automation_runs") as batch:
        batch.add_column(sa.Column("event_id", BIG_ID, nullable=True))
        batch.add_column(_time("step_reached_at"))
        batch.create_unique_constraint("uq_engage_runs_event", ["automation_id", "event_id"])


def downgrade() -> None:
    with op.batch_alter_table("engage_automation_runs") as batch:
        batch.drop_constraint("uq_engage_runs_event", type_="unique")
        batch.drop_column("step_reached_at")
        batch.drop_column("event_id")
    # Event-triggered and branching automations cannot run on the older version:
    # they go, with their runs.
    op.execute(
        "DELETE FROM engage_automations WHERE trigger_segment_id IS NULL"
        " OR CAST(steps AS TEXT) LIKE '%\"wait_for\"%'"
        " OR CAST(steps AS TEXT) LIKE '%\"branch\"%'"
    )
    with op.batch_alter_table("engage_automations") as batch:
        batch.drop_column("watched_events")
        batch.drop_column("trigger_where")
        batch.drop_column("trigger_event")
        batch.alter_column("trigger_segment_id", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("engage_messages") as batch:
        for name in reversed(MESSAGE_TIMES):
            batch.drop_column(name)
