"""Background work: the outbox, RQ jobs, ``run_due`` and the worker.

A commit that writes outbox rows is followed by :func:`dispatch`: with
``ENGAGE_REDIS_URL`` a job is enqueued on ``ENGAGE_QUEUE``; without it the same
work runs inline, right after the commit. If Redis cannot be reached the error is
logged and the rows wait for the next worker or ``run_due``: nothing is lost and
the host's commit never fails.

Every job takes ids (or nothing), runs in the app context and is idempotent.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask, current_app
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from .db import log, operation_session, shares_host_transaction
from .models import Customer, OutboxItem, SchedulerState, Segment, utcnow
from .outbox import PENDING, add_to_outbox

#: Seconds before each retry of a failed job (RQ ``Retry``).
JOB_RETRY_INTERVALS = [10, 60, 300]
#: After Redis failed, skip it for this many seconds: the work is safe in the outbox,
#: and a loop of commits must not pay the connect timeout each time.
REDIS_RETRY_AFTER = 5.0

_clients: dict[str, Any] = {}
_down_until: dict[str, float] = {}


# --- Redis and RQ --------------------------------------------------------------------

def redis_connection(app: Flask | None = None) -> Any:
    """The Redis client for ``ENGAGE_REDIS_URL`` (None in inline mode); fails fast."""
    url = (app or current_app).config.get("ENGAGE_REDIS_URL")
    if not url:
        return None
    if url not in _clients:
        from redis import Redis

        _clients[url] = Redis.from_url(url, socket_connect_timeout=1, socket_timeout=5)
    return _clients[url]


def get_queue(app: Flask | None = None) -> Any:
    """Engage's RQ queue (None in inline mode)."""
    from rq import Queue

    connection = redis_connection(app)
    if connection is None:
        return None
    return Queue((app or current_app).config["ENGAGE_QUEUE"], connection=connection)


def enqueue(func: Callable[..., Any], *args: Any, job_id: str | None = None) -> bool:
    """Enqueue a job with retries; False (and a log line) if Redis is unreachable.

    After a failure Redis is not tried again for ``REDIS_RETRY_AFTER`` seconds.
    """
    from redis.exceptions import RedisError
    from rq import Retry

    url = current_app.config["ENGAGE_REDIS_URL"]
    if _down_until.get(url, 0.0) > time.monotonic():
        log.debug("flask-engage: Redis recently unreachable; work stays in the outbox")
        return False
    try:
        get_queue().enqueue(func, *args, job_id=job_id, retry=Retry(
            max=len(JOB_RETRY_INTERVALS), interval=JOB_RETRY_INTERVALS))
    except (RedisError, OSError) as exc:
        _down_until[url] = time.monotonic() + REDIS_RETRY_AFTER
        log.warning("flask-engage: could not reach Redis (%s); work stays in the outbox", exc)
        return False
    _down_until.pop(url, None)
    return True


def _drain_flag() -> str:
    return f"engage:{current_app.config['ENGAGE_QUEUE']}:drain-pending"


def request_drain() -> None:
    """Make sure a drain job is queued: one Redis ``SET NX`` when one already is.

    The flag is cleared when a drain job starts, so work committed while it runs
    gets a job of its own; it expires after a minute in case a job is lost (the
    schedule drains leftovers anyway).
    """
    from redis.exceptions import RedisError

    url = current_app.config["ENGAGE_REDIS_URL"]
    if _down_until.get(url, 0.0) > time.monotonic():
        return
    try:
        first = redis_connection().set(_drain_flag(), 1, nx=True, ex=60)
    except (RedisError, OSError) as exc:
        _down_until[url] = time.monotonic() + REDIS_RETRY_AFTER
        log.warning("flask-engage: could not reach Redis (%s); work stays in the outbox", exc)
        return
    if first:
        enqueue(job_drain_outbox)


def dispatch(app: Flask) -> None:
    """After a commit that wrote outbox rows: enqueue, or run inline."""
    with app.app_context():
        if app.config.get("ENGAGE_REDIS_URL"):
            request_drain()
        else:
            try:
                finish_inline()
            except Exception:  # the host's request must not fail; the outbox keeps the work
                log.exception("flask-engage: inline processing failed; run_due will retry it")


def finish_inline(now: datetime | None = None, *, triggered: bool = False) -> None:
    """Inline mode: do the outbox work, then the automation steps and sends it caused
    (or that the caller's own work caused: ``triggered``)."""
    _, drained = _drain(now)
    if triggered or drained:
        advance_automations(now)
        deliver_all()


# --- the outbox ----------------------------------------------------------------------

def _claim(session: Session, limit: int) -> list[tuple[str, int]]:
    """Delete up to ``limit`` outbox rows and return their (task, key).

    The rows are this transaction's: PostgreSQL workers skip rows another one
    holds; on SQLite this DELETE is the transaction's first write, so writers
    queue up behind it. If the work fails, the rollback brings the rows back.
    """
    outbox = OutboxItem.__table__
    pick = select(outbox.c.id).order_by(outbox.c.id).limit(limit)
    if session.scalar(pick.limit(1)) is None:  # nothing to do: take no write lock
        return []
    if session.get_bind().dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    deleted = session.execute(
        delete(outbox).where(outbox.c.id.in_(pick)).returning(outbox.c.task, outbox.c.key)
    )
    return [(task, int(key)) for task, key in deleted]


def _lock_customers(session: Session, customer_ids: list[int]) -> None:
    """PostgreSQL: one worker at a time evaluates a customer, and none while a
    segment is being recomputed (which holds its row ``FOR UPDATE``)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    session.execute(
        select(Segment.id).order_by(Segment.id).with_for_update(read=True, key_share=True)
    )
    session.execute(
        select(Customer.id).where(Customer.id.in_(customer_ids)).order_by(Customer.id)
        .with_for_update(key_share=True)
    )


def drain_outbox(now: datetime | None = None, batch: int = 500) -> int:
    """Process every outbox row; each row is deleted in the transaction doing its work,
    so concurrent workers process each row exactly once. Returns rows processed."""
    return _drain(now, batch)[0]


def _drain(now: datetime | None = None, batch: int = 500) -> tuple[int, bool]:
    """Drain the outbox; also say whether it started anything that may send
    (a membership change, which may start automation runs, or a broadcast)."""
    from .messages.broadcasts import start_broadcast
    from .segments.membership import evaluate_customers, recompute_segment, send_signals

    done, triggered = 0, False
    while True:
        computations: list[str | None] = []
        with operation_session() as session:
            claimed = _claim(session, batch)
            if not claimed:
                return done, triggered
            ids = sorted({key for task, key in claimed if task == "evaluate"})
            if ids:
                _lock_customers(session, ids)
                computations.append(evaluate_customers(session, ids, now))
            for task, key in claimed:
                if task == "recompute" and (segment := session.get(Segment, key)) is not None:
                    computations.append(recompute_segment(session, segment, now).computation)
                elif task == "broadcast":
                    triggered |= start_broadcast(session, key, now) > 0
                elif task == "deliver":
                    triggered = True
            done += len(claimed)
        if any(computations):
            triggered = True
            with operation_session() as session:
                send_signals(session, computations)


# --- automations and delivery ----------------------------------------------------------

def advance_automations(now: datetime | None = None) -> int:
    """Advance due automation runs until none is due; returns runs advanced."""
    from .automations import advance_runs

    now = now or utcnow()
    total = 0
    while True:
        with operation_session() as session:
            advanced, _ = advance_runs(session, now)
        total += advanced
        if advanced == 0:
            return total


def deliver_all(broadcast_id: int | None = None) -> int:
    """Deliver queued messages, batch after batch, in this process."""
    from .messages.delivery import deliver_batch

    if shares_host_transaction():
        # Sending now would commit the host's pending work on its shared connection:
        # leave a note in the outbox, done once the host's transaction commits.
        with operation_session() as session:
            add_to_outbox(session, "deliver", [0])
        return 0
    total = 0
    while True:
        sent = deliver_batch(broadcast_id=broadcast_id,
                             limit=current_app.config["ENGAGE_BATCH_SIZE"])
        total += sent
        if sent == 0:
            return total


def schedule_delivery() -> None:
    """Redis mode: enqueue enough batch jobs for the queued messages (inline: send them)."""
    from .models import Message

    if get_queue() is None:
        deliver_all()
        return

    with operation_session() as session:
        queued = session.scalar(select(func.count()).where(Message.status == "queued")) or 0
    size = current_app.config["ENGAGE_BATCH_SIZE"]
    for _ in range(min(-(-queued // size), 1000)):
        if not enqueue(job_deliver_batch):
            return


# --- the schedule ------------------------------------------------------------------------

def _set_state(session: Session, key: str, value: str) -> None:
    row = session.get(SchedulerState, key)
    if row is None:
        session.add(SchedulerState(key=key, value=value))
    else:
        row.value = value


def get_state_value(key: str) -> str | None:
    """A value of ``engage_state`` (``last_tick``...)."""
    with operation_session() as session:
        row = session.get(SchedulerState, key)
        return row.value if row else None


def recompute_due(now: datetime) -> list[Any]:
    """Recompute time-based segments not computed for ``ENGAGE_RECOMPUTE_INTERVAL``
    (or computed "in the future" of ``now``), and segments whose last evaluation failed."""
    interval = timedelta(seconds=current_app.config["ENGAGE_RECOMPUTE_INTERVAL"])
    with operation_session() as session:
        due_ids = list(
            session.scalars(
                select(Segment.id).where(
                    Segment.last_error.is_not(None)
                    | (Segment.is_time_based.is_(True)
                       & (Segment.last_computed_at.is_(None)
                          | (Segment.last_computed_at <= now - interval)
                          | (Segment.last_computed_at > now)))  # the clock went back
                ).order_by(Segment.id)
            )
        )
    return [recompute_one(segment_id, now) for segment_id in due_ids]


def recompute_one(segment_id: int, now: datetime | None = None) -> Any:
    """Recompute a segment in its own transaction; a failure is recorded, logged and retried."""
    from .segments.membership import Outcome, recompute_segment, send_signals

    now = now or utcnow()
    try:
        with operation_session() as session:
            segment = session.get(Segment, segment_id)
            if segment is None:
                return None
            outcome = recompute_segment(session, segment, now)
    except Exception as exc:
        log.exception("flask-engage: recomputing segment %s failed", segment_id)
        with operation_session() as session:
            segment = session.get(Segment, segment_id)
            if segment is not None:
                segment.last_error = f"{type(exc).__name__}: {exc}"[:2000]
                return Outcome(segment.slug, 0, 0, 0, None, segment.last_error)
        return None
    with operation_session() as session:
        send_signals(session, [outcome.computation])
    return outcome


def run_due(now: datetime | None = None) -> dict[str, int]:
    """Do everything due by ``now``; returns what was done, by kind."""
    from .messages.broadcasts import due_broadcasts, queue_broadcast
    from .segments.history import take_snapshots

    now = now or utcnow()
    report = {"outbox": drain_outbox(now)}
    with operation_session() as session:
        ids = due_broadcasts(session, now)
        for broadcast_id in ids:
            queue_broadcast(session, broadcast_id, now)
    report["broadcasts"] = len(ids)
    report["outbox"] += drain_outbox(now)
    report["segments"] = len(recompute_due(now))
    report["runs"] = advance_automations(now)
    report["sent"] = deliver_all()
    with operation_session() as session:
        report["snapshots"] = take_snapshots(session, now)
        _set_state(session, "last_tick", now.isoformat())
    return report


# --- job entry points (RQ imports these by name) -------------------------------------

def job_drain_outbox() -> int:
    """RQ job: process the outbox, then queue the sends it caused."""
    connection = redis_connection()
    if connection is not None:
        connection.delete(_drain_flag())
    done = drain_outbox()
    advance_automations()
    schedule_delivery()
    return done


def job_deliver_batch() -> int:
    """RQ job: deliver one batch of queued messages."""
    from .messages.delivery import deliver_batch

    return deliver_batch(limit=current_app.config["ENGAGE_BATCH_SIZE"])


def job_recompute(segment_id: int) -> None:
    """RQ job: recompute one segment."""
    recompute_one(segment_id)


def job_run_due() -> dict[str, int]:
    """RQ job: ``run_due`` now (what a burst worker does after the queued jobs)."""
    return run_due()


def job_tick() -> dict[str, int]:
    """RQ job: ``run_due`` now, then schedule the next tick with RQ's scheduler."""
    try:
        return run_due()
    finally:
        schedule_next_tick()


def schedule_next_tick() -> bool:
    """Schedule the next tick; its id is derived from its time slot, so workers
    calling this together leave one scheduled tick, not several."""
    from redis.exceptions import RedisError

    interval = current_app.config["ENGAGE_SCHEDULE_INTERVAL"]
    slot = int(time.time() // interval) + 1
    queue = get_queue()
    try:
        queue.enqueue_at(datetime.fromtimestamp(slot * interval, UTC), job_tick,
                         job_id=f"engage-tick-{re.sub(r'[^A-Za-z0-9_-]', '-', queue.name)}-{slot}")
    except (RedisError, OSError) as exc:
        log.warning("flask-engage: could not schedule the next tick (%s)", exc)
        return False
    return True


def work(burst: bool = False) -> bool:
    """Run an RQ SimpleWorker (no fork) on Engage's queue, in this process and app context.

    The worker runs RQ's scheduler: retries of failed jobs and the tick
    (``job_tick`` runs ``run_due`` and re-schedules itself). With ``burst`` it
    processes the queued jobs, the due scheduled ones and ``run_due``, then returns.
    Inline mode (no ``ENGAGE_REDIS_URL``) just runs ``run_due``.
    """
    from rq import SimpleWorker

    app = current_app._get_current_object()
    queue = get_queue()
    if queue is None:
        run_due()
        return True
    if burst:
        if not enqueue(job_run_due):
            run_due()
            return False
    else:
        enqueue(job_drain_outbox)
        schedule_next_tick()
    worker = SimpleWorker([queue], connection=queue.connection)
    with app.app_context():
        return worker.work(burst=burst, with_scheduler=True, logging_level="WARNING")


# --- session hooks ---------------------------------------------------------------------

def after_transaction_end(session: Session, transaction: Any) -> None:
    """Dispatch once the host's outermost transaction has committed."""
    if transaction.parent is not None or transaction.nested:
        return
    if session.info.pop("engage_committed", False):
        from flask import has_app_context

        if has_app_context():
            dispatch(current_app._get_current_object())


def after_commit(session: Session) -> None:
    if session.info.pop(PENDING, False):
        session.info["engage_committed"] = True


def after_rollback(session: Session) -> None:
    session.info.pop(PENDING, None)
    session.info.pop("engage_committed", None)
