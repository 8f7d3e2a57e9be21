"""stable unsubscribe tokens: customer aliases after merges, no customer id reuse on SQLite

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29

* ``engage_customer_aliases``: a merged customer's host id (and internal id) point
  at the customer it was merged into, so links already sent keep working.
* SQLite: ``engage_customers`` is rebuilt with ``AUTOINCREMENT``, so a deleted
  customer's id is never given to a new one. The rebuild runs with foreign key
  enforcement off (were it on, dropping the old table would cascade to every
  customer's events).
* ``engage_state`` records when this ran: unsubscribe tokens made before (which
  carry the internal id) never act on a customer created after.

Downgrading drops the aliases and the record, and keeps ``AUTOINCREMENT``.
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import flask_engage.models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

LEGACY_CUTOFF = "legacy_unsubscribe_tokens_before"
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_autoincrement_customers()
    op.create_table(
        "engage_customer_aliases",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("source_id", BIG_ID, nullable=False),
        sa.Column(
            "source_created_at", flask_engage.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("customer_id", BIG_ID, nullable=False),
        sa.Column("merged_at", flask_engage.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["engage_customers.id"],
            name=op.f("fk_engage_customer_aliases_customer_id_engage_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engage_customer_aliases")),
    )
    op.create_index(
        "ix_engage_customer_aliases_external_id",
        "engage_customer_aliases",
        ["external_id", "merged_at"],
    )
    op.create_index(
        "ix_engage_customer_aliases_source_id", "engage_customer_aliases", ["source_id"]
    )
    op.create_index(
        op.f("ix_engage_customer_aliases_customer_id"), "engage_customer_aliases", ["customer_id"]
    )
    now = datetime.now(UTC)
    state = sa.table(
        "engage_state",
        sa.column("key", sa.String()),
        sa.column("value", sa.Text()),
        sa.column("updated_at", flask_engage.models.UTCDateTime(timezone=True)),
    )
    op.bulk_insert(state, [{"key": LEGACY_CUTOFF, "value": now.isoformat(), "updated_at": now}])


def _sqlite_autoincrement_customers() -> None:
    bind = op.get_bind()
    enforced = bool(bind.exec_driver_sql("PRAGMA foreign_keys").scalar())
    if enforced:
        bind.exec_driver_sql("PRAGMA foreign_keys = OFF")  # a no-op inside a transaction
        if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
            raise RuntimeError(
                "migration 0005 rebuilds engage_customers and needs SQLite's foreign key"
                " enforcement off, which cannot change inside a transaction: run"
                " `flask engage db upgrade 0004`, then `flask engage db upgrade`"
            )
    with op.batch_alter_table(
        "engage_customers", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ):
        pass
    if enforced:  # back on once this connection's transaction is over
        own = bind.connection.dbapi_connection
        restored = []

        def restore(dbapi_connection, record):
            if dbapi_connection is own and not restored:
                dbapi_connection.execute("PRAGMA foreign_keys = ON")
                restored.append(True)

        sa.event.listen(bind.engine.pool, "checkin", restore)


def downgrade() -> None:
    state = sa.table("engage_state", sa.column("key", sa.String()))
    op.execute(state.delete().where(state.c.key == LEGACY_CUTOFF))
    op.drop_index(op.f("ix_engage_customer_aliases_customer_id"), "engage_customer_aliases")
    op.drop_index("ix_engage_customer_aliases_source_id", "engage_customer_aliases")
    op.drop_index("ix_engage_customer_aliases_external_id", "engage_customer_aliases")
    op.drop_table("engage_customer_aliases")
