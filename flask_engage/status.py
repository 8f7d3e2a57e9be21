"""Operational facts for ``flask engage status`` and the admin dashboard."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import current_app
from sqlalchemy import func, select

from .db import operation_session
from .jobs import get_queue, get_state_value
from .models import Message, OutboxItem, Segment, utcnow


def collect() -> dict[str, Any]:
    """Queue depth, failed jobs, outbox backlog, queued messages, last tick, stale segments."""
    facts: dict[str, Any] = {}
    queue = get_queue()
    if queue is None:
        facts["mode"] = "inline (no ENGAGE_REDIS_URL)"
    else:
        try:
            facts["queue"] = f"{queue.name}: {len(queue)} job(s)"
            facts["failed jobs"] = queue.failed_job_registry.count
            facts["scheduled jobs"] = queue.scheduled_job_registry.count
        except Exception as exc:  # Redis down: say so, keep going
            facts["queue"] = f"unreachable ({type(exc).__name__})"
    stale_after = utcnow() - timedelta(seconds=2 * current_app.config["ENGAGE_RECOMPUTE_INTERVAL"])
    with operation_session() as session:
        facts["outbox backlog"] = session.scalar(select(func.count()).select_from(OutboxItem))
        facts["queued messages"] = session.scalar(
            select(func.count()).where(Message.status == "queued")
        )
        stale = session.scalars(
            select(Segment.slug).where(
                Segment.last_error.is_not(None)
                | (Segment.is_time_based.is_(True)
                   & (Segment.last_computed_at.is_(None)
                      | (Segment.last_computed_at < stale_after)))
            )
        ).all()
    facts["last tick"] = get_state_value("last_tick") or "never"
    facts["stale segments"] = ", ".join(stale) or "none"
    return facts
