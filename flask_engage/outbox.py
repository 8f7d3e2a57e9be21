"""The durable outbox: work a transaction creates, written in that transaction.

Services add rows here; once the transaction has committed,
:mod:`flask_engage.operations` hands them to a worker (or runs them inline), and
:mod:`flask_engage.jobs` deletes each row in the transaction that does its work.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, insert
from sqlalchemy.orm import Session

from .db import pending_work
from .models import OutboxItem, utcnow


def outbox_rows(task: str, keys: Iterable[object]) -> list[dict[str, Any]]:
    """The parameters of one outbox row per key (deduplicated)."""
    now = utcnow()
    return [{"task": task, "key": str(key), "created_at": now} for key in dict.fromkeys(keys)]


def add_to_outbox(
    session: Session, task: str, keys: Iterable[object], conn: Connection | None = None
) -> None:
    """Write one outbox row per key (deduplicated) and flag the session for dispatch."""
    rows = outbox_rows(task, keys)
    if not rows:
        return
    (conn or session.connection()).execute(insert(OutboxItem.__table__), rows)
    pending_work(session).outbox = True
