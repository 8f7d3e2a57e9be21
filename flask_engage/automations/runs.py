"""Automation runs: started set-based with membership changes, walked step by step.

Runs are created in the transaction of the membership change that triggers them
(:func:`start_runs` for segments, :func:`start_list_runs` for lists, called by
whoever applied the change). :func:`advance_runs`
walks every due run as far as it can go (until a wait, the end, or an exit); each
run's progress is a compare-and-set on its ``(step, status)``, and a send step
writes its message row with a unique ``(run_id, step)``, so a step is executed
once even when two workers race.

A run whose step raises is rolled back alone (a savepoint per run), retried with
backoff (``due_at``) and, after :data:`MAX_ATTEMPTS`, parked with its error: it
never stops the other runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, exists, func, insert, literal, select, tuple_, update
from sqlalchemy.orm import Session

from ..db import log, rowcount
from ..models import (
    LIVE_RUNS,
    Automation,
    AutomationRun,
    ChangeKind,
    Customer,
    ListChange,
    MembershipChange,
    RunStatus,
    TriggerKind,
)
from .steps import Next, Walk, kind_of

#: Attempts before a failing run is parked.
MAX_ATTEMPTS = 5


def retry_delay(attempts: int) -> timedelta:
    """Backoff before attempt ``attempts + 1``: 1, 4, 16, 64 minutes..."""
    return timedelta(minutes=4 ** max(attempts - 1, 0))


def start_runs(session: Session, computation: str, now: datetime) -> None:
    """Start runs for a computation's joins/leaves, and exit runs on leave. Set-based."""
    changes = MembershipChange.__table__
    autos = Automation.__table__
    involved = select(changes.c.segment_id).where(changes.c.computation == computation)
    watched = select(autos.c.id).where(autos.c.trigger_segment_id.in_(involved)).limit(1)
    if session.scalar(watched) is None:
        return  # no automation watches these segments: skip the set-based statements
    _start(
        session,
        changes,
        changes.c.segment_id,
        autos.c.trigger_segment_id,
        (TriggerKind.JOINS, TriggerKind.LEAVES),
        computation,
        now,
    )


def start_list_runs(session: Session, computation: str, now: datetime) -> int:
    """Start runs for a computation's list subscriptions (``subscribes``) and
    unsubscriptions (``unsubscribes``), and exit ``subscribes`` runs of those who
    unsubscribed when the automation asks; returns the runs started. Set-based, with
    the reentry rules of segments: once per customer unless ``reentry``, and never
    beside a live run. Customers whose host row was deleted (``on_delete="keep"``)
    start nothing."""
    changes = ListChange.__table__
    autos = Automation.__table__
    involved = select(changes.c.list_id).where(changes.c.computation == computation)
    watched = select(autos.c.id).where(autos.c.trigger_list_id.in_(involved)).limit(1)
    if session.scalar(watched) is None:
        return 0
    return _start(
        session,
        changes,
        changes.c.list_id,
        autos.c.trigger_list_id,
        (TriggerKind.SUBSCRIBES, TriggerKind.UNSUBSCRIBES),
        computation,
        now,
    )


def _start(
    session: Session,
    changes: Any,
    target: Any,
    trigger_target: Any,
    kinds: tuple[TriggerKind, TriggerKind],
    computation: str,
    now: datetime,
) -> int:
    """Runs for the changes of ``computation`` (returns how many started): ``kinds``
    are the triggers of a join and of a leave; ``target``/``trigger_target`` match a
    change to the automations watching what changed."""
    runs = AutomationRun.__table__
    autos = Automation.__table__
    customers = Customer.__table__
    on_join, on_leave = kinds
    trigger = case((changes.c.kind == ChangeKind.JOINED, on_join), else_=on_leave)
    previous = (
        select(func.max(runs.c.entry))
        .where(runs.c.automation_id == autos.c.id, runs.c.customer_id == changes.c.customer_id)
        .scalar_subquery()
    )
    blocked = exists().where(
        runs.c.automation_id == autos.c.id,
        runs.c.customer_id == changes.c.customer_id,
        (autos.c.reentry.is_(False)) | runs.c.status.in_(LIVE_RUNS),
    )
    kept = exists().where(customers.c.id == changes.c.customer_id, customers.c.deleted_at.is_(None))
    at = literal(now, runs.c.due_at.type)
    columns = ["automation_id", "customer_id", "entry", "step", "status", "due_at"]
    started = session.execute(
        insert(runs).from_select(
            [*columns, "started_at", "updated_at"],
            select(
                autos.c.id,
                changes.c.customer_id,
                func.coalesce(previous, 0) + 1,
                literal(0),
                literal(RunStatus.ACTIVE.value),
                at,
                at,
                at,
            )
            .select_from(
                changes.join(autos, and_(trigger_target == target, autos.c.trigger_kind == trigger))
            )
            .where(changes.c.computation == computation, autos.c.active.is_(True), ~blocked, kept),
        )
    )
    leavers = (
        select(autos.c.id, changes.c.customer_id)
        .select_from(changes.join(autos, trigger_target == target))
        .where(
            changes.c.computation == computation,
            changes.c.kind == ChangeKind.LEFT,
            autos.c.trigger_kind == on_join,
            autos.c.exit_on_leave.is_(True),
        )
    )
    session.execute(
        update(runs)
        .where(
            runs.c.status.in_(LIVE_RUNS),
            tuple_(runs.c.automation_id, runs.c.customer_id).in_(leavers),
        )
        .values(status=RunStatus.EXITED, updated_at=now)
    )
    return rowcount(started)


class _RunMoved(Exception):
    """Another worker advanced this run first."""


def advance_run(session: Session, run: AutomationRun, automation: Automation, now: datetime) -> int:
    """Walk one due run as far as it goes; returns the number of messages queued.

    Must run inside a transaction (a savepoint per run); the final compare-and-set
    fails (and the caller rolls back) if another worker moved the run first.
    """
    customer = session.get(Customer, run.customer_id)
    if customer is None:  # forgotten meanwhile
        status, step, clock, queued = RunStatus.CANCELLED, run.step, run.due_at, 0
    else:
        walk = Walk(
            session, run, automation, customer, now, run.step, RunStatus(run.status), run.due_at
        )
        _walk(walk, automation.steps)
        status, step, clock, queued = walk.status, walk.step, walk.clock, walk.queued
    moved = rowcount(
        session.execute(
            update(AutomationRun)
            .where(
                AutomationRun.id == run.id,
                AutomationRun.step == run.step,
                AutomationRun.status == run.status,
            )
            .values(step=step, status=status, due_at=clock, updated_at=now, attempts=0, error=None)
            .execution_options(synchronize_session=False)
        )
    )
    if moved != 1:
        raise _RunMoved()
    return queued


def _walk(walk: Walk, steps: list[dict[str, Any]]) -> None:
    """Run steps from ``walk.step`` until one pauses or ends the run, or none is left."""
    while walk.step < len(steps):
        kind, spec = kind_of(steps[walk.step])
        if kind.run(spec, walk) is not Next.CONTINUE:
            return
        walk.step += 1
    walk.status = RunStatus.COMPLETED


def _record_failure(session: Session, run: AutomationRun, error: str, now: datetime) -> None:
    """Retry the run later, or park it after :data:`MAX_ATTEMPTS`."""
    attempts = (run.attempts or 0) + 1
    parked = attempts >= MAX_ATTEMPTS
    session.execute(
        update(AutomationRun)
        .where(AutomationRun.id == run.id, AutomationRun.step == run.step)
        .values(
            attempts=attempts,
            error=error,
            status=RunStatus.PARKED if parked else run.status,
            due_at=now + retry_delay(attempts),
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    log.warning(
        "flask-engage: automation run %s %s: %s",
        run.id,
        "parked" if parked else f"failed (attempt {attempts}, retried later)",
        error,
    )


def advance_runs(session: Session, now: datetime, limit: int = 200) -> tuple[int, int]:
    """Advance up to ``limit`` due runs; returns (runs processed, messages queued).

    On PostgreSQL due runs are claimed with ``FOR UPDATE SKIP LOCKED`` so
    concurrent workers take different runs; elsewhere the compare-and-set in
    :func:`advance_run` keeps a step from running twice.
    """
    query = (
        select(AutomationRun)
        .join(Automation, Automation.id == AutomationRun.automation_id)
        .where(
            AutomationRun.status.in_(LIVE_RUNS),
            AutomationRun.due_at <= now,
            Automation.active.is_(True),
        )
        .order_by(AutomationRun.due_at, AutomationRun.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=AutomationRun)
    processed = queued = 0
    automations: dict[int, Automation | None] = {}
    for run in session.scalars(query).all():
        if run.automation_id not in automations:
            automations[run.automation_id] = session.get(Automation, run.automation_id)
        automation = automations[run.automation_id]
        if automation is None:
            continue
        try:
            with session.begin_nested():
                queued += advance_run(session, run, automation, now)
        except _RunMoved:
            continue
        except Exception as exc:  # one run's failure stays with that run
            with session.begin_nested():
                _record_failure(session, run, f"{type(exc).__name__}: {exc}"[:2000], now)
        processed += 1
    return processed, queued


def retry_parked_runs(session: Session, now: datetime) -> int:
    """Give every parked run a new start at the step it failed on; returns how many."""
    return rowcount(
        session.execute(
            update(AutomationRun)
            .where(AutomationRun.status == RunStatus.PARKED)
            .values(status=RunStatus.ACTIVE, attempts=0, error=None, due_at=now, updated_at=now)
        )
    )
