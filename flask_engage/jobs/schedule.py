"""The schedule: what falls due with time, run by ticks that never stop.

:func:`run_due` does everything due by ``now``: outbox leftovers, scheduled
broadcasts, time-based segments (and segments whose last evaluation failed),
automation waits, sends, daily snapshots, and old events past
``ENGAGE_EVENT_RETENTION_DAYS``. :func:`tick` runs it at most once per
``ENGAGE_SCHEDULE_INTERVAL`` across every process, through a lease row in
``engage_state``; it is called by the worker's ticker thread (``flask engage
worker``), which does not depend on Redis, and, in inline mode, after requests
(:func:`install_inline_schedule`), so a demo without a worker still sends its
scheduled broadcasts and refreshes its time-based segments.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, Response, current_app
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..automations import start_runs
from ..db import insert_ignoring_conflicts, log, operation_session, rowcount
from ..messages.broadcasts import due_broadcasts, queue_broadcast
from ..models import SchedulerState, Segment, utcnow
from ..segments.history import take_snapshots
from ..segments.membership import Outcome, lock_segment, recompute_segment, send_signals
from .outbox import drain_outbox
from .retention import prune_events
from .runner import advance_automations, deliver_all

#: This process's name in the schedule lease.
HOLDER = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
LEASE = "schedule_lease"


def get_state_value(key: str) -> str | None:
    """A value of ``engage_state`` (``last_tick``...)."""
    with operation_session() as session:
        row = session.get(SchedulerState, key)
        return row.value if row else None


def _set_state(session: Session, key: str, value: str) -> None:
    row = session.get(SchedulerState, key)
    if row is None:
        session.add(SchedulerState(key=key, value=value))
    else:
        row.value = value


def last_tick() -> datetime | None:
    """When ``run_due`` last completed (None: never)."""
    value = get_state_value("last_tick")
    return datetime.fromisoformat(value) if value else None


def recompute_one(segment_id: int, now: datetime | None = None, *, trigger: bool = True) -> Any:
    """Recompute a segment in its own transaction; a failure is recorded and retried.

    With ``trigger`` the joins and leaves start the automations that watch the
    segment; without it (an admin's edit of the filters) they do not.
    """
    now = now or utcnow()
    try:
        with operation_session() as session:
            # Loaded and locked in one statement with the recorded types: the
            # filters read are those of the locked row.
            found = lock_segment(session, segment_id)
            if found is None:
                return None
            segment, types = found
            outcome = recompute_segment(session, segment, now, locked=True, types=types)
            if trigger and outcome.computation:
                start_runs(session, outcome.computation, now)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:2000]
        log.warning("flask-engage: recomputing segment %s failed: %s", segment_id, error)
        with operation_session() as session:
            broken = session.get(Segment, segment_id)
            if broken is None:
                return None
            broken.last_error = error
            return Outcome(broken.slug, 0, 0, 0, None, error)
    if outcome.computation:  # nothing changed: nothing to announce, no session
        with operation_session() as session:
            send_signals(session, [outcome.computation])
    return outcome


def recompute_due(now: datetime) -> list[Any]:
    """Recompute time-based segments not computed for ``ENGAGE_RECOMPUTE_INTERVAL``
    (or computed "in the future" of ``now``), and every segment whose last
    evaluation failed."""
    interval = timedelta(seconds=current_app.config["ENGAGE_RECOMPUTE_INTERVAL"])
    stale = (
        Segment.last_computed_at.is_(None)
        | (Segment.last_computed_at <= now - interval)
        | (Segment.last_computed_at > now)  # the clock went back
    )
    with operation_session() as session:
        due_ids = list(
            session.scalars(
                select(Segment.id)
                .where((Segment.is_time_based.is_(True) & stale) | Segment.last_error.is_not(None))
                .order_by(Segment.id)
            )
        )
    return [recompute_one(segment_id, now) for segment_id in due_ids]


def run_due(now: datetime | None = None) -> dict[str, int]:
    """Do everything due by ``now``; returns what was done, by kind."""
    now = now or utcnow()
    report = {"outbox": drain_outbox(now)[0]}
    with operation_session() as session:
        ids = due_broadcasts(session, now)
        for broadcast_id in ids:
            queue_broadcast(session, broadcast_id, now)
    report["broadcasts"] = len(ids)
    report["outbox"] += drain_outbox(now)[0]
    report["segments"] = len(recompute_due(now))
    report["runs"] = advance_automations(now)
    report["sent"] = deliver_all(now=now)
    report["events_pruned"] = prune_events(now)
    with operation_session() as session:
        report["snapshots"] = take_snapshots(session, now)
        _set_state(session, "last_tick", utcnow().isoformat())
    return report


def take_lease(name: str, seconds: float, now: datetime | None = None) -> bool:
    """Hold the lease ``name`` for ``seconds`` unless another process holds it."""
    now = now or utcnow()
    table = SchedulerState.__table__
    with operation_session() as session:
        session.execute(
            insert_ignoring_conflicts(session, table, ["key"]).values(
                key=name, value="", updated_at=now - timedelta(seconds=seconds)
            )
        )
        taken = rowcount(
            session.execute(
                update(table)
                .where(
                    table.c.key == name,
                    (table.c.updated_at <= now - timedelta(seconds=seconds * 0.9))
                    | (table.c.value == HOLDER),
                )
                .values(value=HOLDER, updated_at=now)
            )
        )
    return bool(taken)


def tick() -> dict[str, int] | None:
    """``run_due`` now, unless another process ticked in this interval."""
    interval = current_app.config["ENGAGE_SCHEDULE_INTERVAL"]
    if not take_lease(LEASE, interval):
        return None
    return run_due()


class Ticker(threading.Thread):
    """A thread that calls :func:`tick` every ``ENGAGE_SCHEDULE_INTERVAL`` seconds.

    It needs only the database, so the schedule goes on while Redis is down; a
    tick that fails is logged and the next one comes one interval later.
    """

    def __init__(self, app: Flask) -> None:
        super().__init__(name="engage-ticker", daemon=True)
        self.app = app
        self.stopped = threading.Event()

    def run(self) -> None:
        interval = self.app.config["ENGAGE_SCHEDULE_INTERVAL"]
        while not self.stopped.is_set():
            with self.app.app_context():
                try:
                    tick()
                except Exception:
                    log.exception("flask-engage: a schedule tick failed")
            self.stopped.wait(interval)

    def stop(self) -> None:
        self.stopped.set()


def install_inline_schedule(app: Flask) -> None:
    """Inline mode: after a response, at most once per interval and process, tick.

    The tick runs once the response has been sent (``call_on_close``), under the
    schedule lease, so several web processes do not run it twice.
    """
    checked = {"at": 0.0}
    guard = threading.Lock()

    @app.after_request
    def _schedule(response: Response) -> Response:
        if not app.config["ENGAGE_INLINE_SCHEDULE"] or app.config.get("ENGAGE_REDIS_URL"):
            return response
        interval = app.config["ENGAGE_SCHEDULE_INTERVAL"]
        with guard:
            if time.monotonic() - checked["at"] < interval:
                return response
            checked["at"] = time.monotonic()
        response.call_on_close(lambda: _tick_after(app))
        return response


def _tick_after(app: Flask) -> None:
    with app.app_context():
        try:
            tick()
        except Exception:  # the visitor's response is gone; the host must not notice
            log.exception("flask-engage: the inline schedule failed; it runs again later")
