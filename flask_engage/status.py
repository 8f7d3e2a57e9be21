"""Operational facts for ``engage.status()``, ``flask engage status`` and the dashboard."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from redis.exceptions import RedisError
from sqlalchemy import func, select

from .db import operation_session
from .jobs import dispatch, last_tick
from .jobs.outbox import counts as outbox_counts
from .models import AutomationRun, Message, MessageStatus, RunStatus, Segment, utcnow
from .segments.service import retention_warnings


def schedule_ok(tick: datetime | None, now: datetime | None = None) -> bool:
    """A tick within two ``ENGAGE_RECOMPUTE_INTERVAL`` of now."""
    interval = timedelta(seconds=2 * current_app.config["ENGAGE_RECOMPUTE_INTERVAL"])
    return tick is not None and (now or utcnow()) - tick <= interval


def collect_status() -> dict[str, Any]:
    """Everything an operator checks, as plain values.

    ``last_tick`` (aware datetime or None), ``schedule_ok`` (bool), ``outbox``
    (items waiting), ``parked`` (outbox items and automation runs that gave up),
    ``queued_messages``, ``failing_segments`` (slug -> error), ``stale_segments``
    (time-based segments not recomputed for two intervals, and failing ones),
    ``retention_warnings`` (slug -> why it reads events older than
    ``ENGAGE_EVENT_RETENTION_DAYS`` keeps), ``mode`` and, with
    Redis, ``queue`` (jobs waiting, or ``None`` when unreachable), ``failed_jobs``.
    """
    now = utcnow()
    tick = last_tick()
    waiting, parked_items = outbox_counts()
    with operation_session() as session:
        parked_runs = session.scalar(
            select(func.count()).where(AutomationRun.status == RunStatus.PARKED)
        )
        queued = session.scalar(select(func.count()).where(Message.status == MessageStatus.QUEUED))
        failing = dict(
            session.execute(
                select(Segment.slug, Segment.last_error).where(Segment.last_error.is_not(None))
            ).all()
        )
        stale_after = now - timedelta(seconds=2 * current_app.config["ENGAGE_RECOMPUTE_INTERVAL"])
        stale = session.scalars(
            select(Segment.slug)
            .where(
                Segment.is_time_based.is_(True),
                Segment.last_computed_at.is_(None) | (Segment.last_computed_at < stale_after),
            )
            .order_by(Segment.slug)
        ).all()
        retention = retention_warnings(session, now)
    facts: dict[str, Any] = {
        "mode": "inline" if dispatch.is_inline() else "redis",
        "last_tick": tick,
        "schedule_ok": schedule_ok(tick, now),
        "outbox": waiting,
        "parked": parked_items + (parked_runs or 0),
        "parked_runs": parked_runs or 0,
        "queued_messages": queued or 0,
        "failing_segments": failing,
        "stale_segments": sorted({*stale, *failing}),
        "retention_warnings": retention,
    }
    queue = dispatch.get_queue()
    if queue is not None:
        try:
            facts["queue"] = len(queue)
            facts["failed_jobs"] = queue.failed_job_registry.count
        except (RedisError, OSError):
            facts["queue"] = None
            facts["failed_jobs"] = None
    return facts
