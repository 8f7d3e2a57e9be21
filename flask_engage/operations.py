"""What follows a commit: the one place that decides between inline and queued work.

A transaction that tracked data or wrote outbox rows leaves a
:class:`~flask_engage.db.PendingWork`; :func:`after_commit` runs it once the
transaction has committed. Operations of the Python API (``recompute``,
``send_broadcast``, ``run_due``, an admin's edit) commit their own work and then
call :func:`finish`. Without ``ENGAGE_REDIS_URL`` (inline mode) the follow-up work
runs here, in this process; with it, a drain job is queued for a worker (for the
host's commits by the notifier thread, so a request never waits for Redis). If
Redis is down the work waits in the outbox for the schedule: the host never fails.
"""

from __future__ import annotations

from datetime import datetime

from flask import Flask
from sqlalchemy import select

from . import signals
from .db import PendingWork, log, operation_session
from .jobs import dispatch as queueing
from .jobs.rqjobs import job_drain_outbox, job_recompute
from .jobs.runner import finish_here
from .jobs.schedule import recompute_one
from .models import Customer, Event
from .segments.membership import Outcome


def after_commit(app: Flask, work: PendingWork, *, background: bool = False) -> None:
    """Run what a committed transaction left: signals first, then its outbox rows.

    ``background``: the host's own commit, whose drain request goes to Redis from
    the notifier thread. Never raises: the commit is done, and the outbox keeps the work.
    """
    with app.app_context():
        try:
            announce(app, work)
        except Exception:
            log.exception("flask-engage: a tracking signal receiver failed")
        if work.outbox:
            dispatch(background=background)


def dispatch(*, background: bool = False) -> None:
    """Outbox rows were committed: queue a drain (from the notifier thread when
    ``background``), or do the work here (inline)."""
    if not queueing.is_inline():
        if background:
            queueing.request_drain_soon(job_drain_outbox)
        else:
            queueing.request_drain(job_drain_outbox)
        return
    try:
        finish_here()
    except Exception:  # the host's request must not fail; the outbox keeps the work
        log.exception("flask-engage: inline processing failed; the schedule retries it")


def finish(now: datetime | None = None) -> None:
    """After an operation's own work (which may have started runs or queued sends)."""
    if queueing.is_inline():
        finish_here(now, triggered=True)
    else:
        queueing.request_drain(job_drain_outbox)


def refresh_segment(segment_id: int, *, trigger: bool = True) -> Outcome | None:
    """Recompute a segment after an edit: queued for a worker, or here (inline, or
    Redis unreachable). ``trigger``: its joins and leaves start automations."""
    if not queueing.is_inline() and queueing.enqueue(job_recompute, segment_id, trigger):
        return None
    outcome = recompute_one(segment_id, trigger=trigger)
    if outcome is not None and outcome.computation:  # nothing changed: nothing to finish
        finish()
    return outcome


def announce(app: Flask, work: PendingWork) -> None:
    """Send ``customer_identified`` / ``event_tracked`` for committed rows (only when
    someone listens: no query otherwise)."""
    wants_customers = bool(work.customer_ids) and bool(signals.customer_identified.receivers)
    wants_events = bool(work.event_ids) and bool(signals.event_tracked.receivers)
    if not (wants_customers or wants_events):
        return
    with operation_session() as session:
        if wants_customers:
            customers = select(Customer).where(Customer.id.in_(work.customer_ids))
            for customer in session.scalars(customers.order_by(Customer.id)):
                signals.customer_identified.send(app, customer=customer)
        if wants_events:
            events = select(Event).where(Event.id.in_(work.event_ids)).order_by(Event.id)
            for row in session.scalars(events):
                signals.event_tracked.send(app, event=row, customer=row.customer)
