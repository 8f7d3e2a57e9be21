"""The durable outbox: work a transaction creates, written in that transaction.

Services add rows here; :mod:`flask_engage.jobs` hands them to a worker (or runs
them inline) once the transaction has committed, and deletes each row in the
transaction that does its work.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, insert
from sqlalchemy.orm import Session

from .models import OutboxItem, utcnow

#: ``session.info`` key set when a transaction wrote outbox rows.
PENDING = "engage_outbox_pending"


def add_to_outbox(
    session: Session, task: str, keys: Iterable[object], conn: Connection | None = None
) -> None:
    """Write one outbox row per key (deduplicated) and flag the session for dispatch."""
    rows = [{"task": task, "key": str(key), "created_at": utcnow()} for key in dict.fromkeys(keys)]
    if not rows:
        return
    (conn or session.connection()).execute(insert(OutboxItem.__table__), rows)
    session.info[PENDING] = True
