"""The durable outbox: work a transaction creates, written in that transaction.

Services add rows here; once the transaction has committed,
:mod:`flask_engage.operations` hands them to a worker (or runs them inline), and
:mod:`flask_engage.jobs` deletes each row in the transaction that does its work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, insert
from sqlalchemy.orm import Session

from .changes import Changes, dump
from .db import pending_work
from .models import OutboxItem, OutboxTask, utcnow


def outbox_rows(
    task: str, keys: Iterable[object], changes: Changes | None = None
) -> list[dict[str, Any]]:
    """The parameters of one outbox row per key (deduplicated), each recording
    ``changes`` (``evaluate`` rows: what changed; None: anything may have)."""
    now, stored = utcnow(), dump(changes)
    return [
        {"task": task, "key": str(key), "created_at": now, "changes": stored}
        for key in dict.fromkeys(keys)
    ]


def evaluation_rows(changed: Mapping[int, Changes | None]) -> list[dict[str, Any]]:
    """One ``evaluate`` row per customer id, each recording what changed about it."""
    now = utcnow()
    return [
        {"task": OutboxTask.EVALUATE.value, "key": str(key), "created_at": now, "changes": dump(c)}
        for key, c in changed.items()
    ]


def add_evaluations(session: Session, changed: Mapping[int, Changes | None]) -> None:
    """Queue customers for segment evaluation, each with what changed about it."""
    if changed:
        session.connection().execute(insert(OutboxItem.__table__), evaluation_rows(changed))
        pending_work(session).outbox = True


def add_to_outbox(
    session: Session,
    task: str,
    keys: Iterable[object],
    conn: Connection | None = None,
    changes: Changes | None = None,
) -> None:
    """Write one outbox row per key (deduplicated) and flag the session for dispatch.

    ``changes``: for ``evaluate`` rows, what changed about these customers, so that
    only the segments reading it are re-checked; None (the default): anything.
    """
    rows = outbox_rows(task, keys, changes)
    if not rows:
        return
    (conn or session.connection()).execute(insert(OutboxItem.__table__), rows)
    pending_work(session).outbox = True
