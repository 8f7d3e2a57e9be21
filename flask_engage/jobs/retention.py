"""Event retention: with ``ENGAGE_EVENT_RETENTION_DAYS`` set, the schedule deletes
events older than that many days, in bounded batches.

Each batch is its own short transaction (``ENGAGE_EVENT_RETENTION_BATCH`` rows), and
a tick deletes at most :data:`MAX_BATCHES` of them, so a first run against years of
history neither holds long locks nor stalls the tick: the rest goes in later ticks.
Segments whose windows read further back than the events kept are reported by
``engage.status()`` and logged when they are saved.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import delete, select

from ..db import log, operation_session, rowcount
from ..models import Event, utcnow

#: Batches one tick deletes at most.
MAX_BATCHES = 20


def retention_cutoff(now: datetime) -> datetime | None:
    """Events that occurred before this are deleted; None: events are kept forever."""
    days = current_app.config["ENGAGE_EVENT_RETENTION_DAYS"]
    return None if days is None else now - timedelta(days=days)


def prune_events(now: datetime | None = None, max_batches: int = MAX_BATCHES) -> int:
    """Delete up to ``max_batches`` batches of events older than the retention; the
    number deleted (0 when retention is off or nothing is old enough)."""
    cutoff = retention_cutoff(now or utcnow())
    if cutoff is None:
        return 0
    size = current_app.config["ENGAGE_EVENT_RETENTION_BATCH"]
    deleted = 0
    for _ in range(max_batches):
        with operation_session() as session:
            oldest = select(Event.id).where(Event.occurred_at < cutoff).limit(size)
            batch = rowcount(session.execute(delete(Event).where(Event.id.in_(oldest))))
        deleted += batch
        if batch < size:
            break
    if deleted:
        log.info("flask-engage: deleted %d events older than %s", deleted, cutoff.isoformat())
    return deleted
