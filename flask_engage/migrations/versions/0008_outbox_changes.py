"""outbox changes: what a tracked write changed, for incremental evaluation

``engage_outbox.changes`` holds, on an ``evaluate`` row, what the write changed
about the customer (a JSON list of the tokens segment filters read, such as
``attribute:plan`` or ``event:Purchase``); the job re-checks only the segments that
read one of them. Null (every row written before this revision) means anything may
have changed: every segment is re-checked, as before.

``ix_engage_outbox_task_id`` goes: no query used it (rows are claimed in id order),
and each tracked write paid for it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("engage_outbox") as batch:
        batch.add_column(sa.Column("changes", sa.Text(), nullable=True))
    op.drop_index("ix_engage_outbox_task_id", table_name="engage_outbox")


def downgrade() -> None:
    op.create_index("ix_engage_outbox_task_id", "engage_outbox", ["task", "id"])
    with op.batch_alter_table("engage_outbox") as batch:
        batch.drop_column("changes")
