"""Automation runs: started set-based, walked through the automation's program.

Runs are created in the transaction of the membership change that triggers them
(:func:`start_runs` for segments, :func:`start_list_runs` for lists, called by
whoever applied the change), or by the ``event`` outbox task for the events that
trigger them (:func:`start_event_runs`: once per automation and event, and once per
customer without re-entry), which also wakes the runs waiting for those events
(:func:`wake_runs`). :func:`advance_runs` walks every due run as far as it can go
(until a wait, the end, or an exit); each run's progress is a compare-and-set on its
``(step, status)``, and a send step writes its message row with a unique
``(run_id, step)``, so a step is executed once even when two workers race.

A run whose step raises is rolled back alone (a savepoint per run), retried with
backoff (``due_at``) and, after :data:`MAX_ATTEMPTS`, parked with its error: it
never stops the other runs.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    Event,
    ListChange,
    MembershipChange,
    RunStatus,
    TriggerKind,
)
from ..segments.membership import make_compiler
from .events import event_conditions
from .steps import Next, Walk, kind_of, program_of

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


def start_event_runs(session: Session, event_ids: Sequence[int], now: datetime) -> int:
    """Start the runs of active event-triggered automations for these events, set-based;
    returns how many started.

    One run per automation and event (``AutomationRun.event_id`` is unique per
    automation, so an event handled twice starts nothing twice); without re-entry,
    only a customer's first qualifying event ever starts one. With re-entry every
    qualifying event starts its own run, even while an earlier one is live.
    """
    events, runs, customers = Event.__table__, AutomationRun.__table__, Customer.__table__
    names = select(events.c.name).where(events.c.id.in_(event_ids)).distinct()
    automations = session.scalars(
        select(Automation).where(
            Automation.trigger_kind == TriggerKind.EVENT,
            Automation.active.is_(True),
            Automation.trigger_event.in_(names),
        )
    ).all()
    if not automations:
        return 0
    compiler = make_compiler(session, now)
    at = literal(now, runs.c.due_at.type)
    started = 0
    for automation in automations:
        assert automation.trigger_event is not None
        matched = (
            select(
                events.c.id.label("event_id"),
                events.c.customer_id,
                func.row_number()
                .over(partition_by=events.c.customer_id, order_by=events.c.id)
                .label("nth"),
            )
            .join(customers, customers.c.id == events.c.customer_id)
            .where(
                events.c.id.in_(event_ids),
                customers.c.deleted_at.is_(None),
                *event_conditions(compiler, automation.trigger_event, automation.trigger_where),
                ~exists().where(
                    runs.c.automation_id == automation.id, runs.c.event_id == events.c.id
                ),
            )
            .subquery()
        )
        mine = and_(
            runs.c.automation_id == automation.id, runs.c.customer_id == matched.c.customer_id
        )
        previous = select(func.max(runs.c.entry)).where(mine).scalar_subquery()
        chosen = select(
            literal(automation.id),
            matched.c.customer_id,
            func.coalesce(previous, 0) + matched.c.nth,
            matched.c.event_id,
            literal(0),
            literal(RunStatus.ACTIVE.value),
            at,
            at,
            at,
        )
        if not automation.reentry:
            chosen = chosen.where(matched.c.nth == 1, ~exists().where(mine))
        columns = ["automation_id", "customer_id", "entry", "event_id", "step", "status"]
        started += rowcount(
            session.execute(
                insert(runs).from_select([*columns, "due_at", "started_at", "updated_at"], chosen)
            )
        )
    return started


def wake_runs(session: Session, event_ids: Sequence[int], now: datetime) -> int:
    """Make runs waiting for these events (``wait_for`` steps) due now; returns how many.

    The step itself then checks the event against its conditions and its time.
    """
    events = Event.__table__
    customers_by_name: dict[str, set[int]] = {}
    for name, customer_id in session.execute(
        select(events.c.name, events.c.customer_id).where(events.c.id.in_(event_ids))
    ):
        customers_by_name.setdefault(name, set()).add(customer_id)
    woken = 0
    for automation in session.scalars(select(Automation).where(Automation.active.is_(True))):
        if not set(automation.watched_events or ()) & set(customers_by_name):
            continue
        for position, instruction in enumerate(program_of(automation)):
            kind, spec = kind_of(instruction)
            for name in kind.events(spec):
                customer_ids = customers_by_name.get(name)
                if not customer_ids:
                    continue
                woken += rowcount(
                    session.execute(
                        update(AutomationRun)
                        .where(
                            AutomationRun.automation_id == automation.id,
                            AutomationRun.step == position,
                            AutomationRun.status == RunStatus.WAITING,
                            AutomationRun.customer_id.in_(sorted(customer_ids)),
                            AutomationRun.due_at > now,
                        )
                        .values(due_at=now)
                        .execution_options(synchronize_session=False)
                    )
                )
    return woken


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
        reached = run.step_reached_at
    else:
        walk = Walk(
            session,
            run,
            automation,
            customer,
            now,
            run.step,
            RunStatus(run.status),
            run.due_at,
            run.step_reached_at or run.due_at,
        )
        _walk(walk, program_of(automation))
        status, step, clock, queued = walk.status, walk.step, walk.clock, walk.queued
        reached = walk.reached
    moved = rowcount(
        session.execute(
            update(AutomationRun)
            .where(
                AutomationRun.id == run.id,
                AutomationRun.step == run.step,
                AutomationRun.status == run.status,
            )
            .values(
                step=step,
                status=status,
                due_at=clock,
                step_reached_at=reached,
                updated_at=now,
                attempts=0,
                error=None,
            )
            .execution_options(synchronize_session=False)
        )
    )
    if moved != 1:
        raise _RunMoved()
    return queued


def _walk(walk: Walk, program: list[dict[str, Any]]) -> None:
    """Run the program from ``walk.step`` until a step pauses or ends the run, or the
    program ends. Jumps go forward only, so this always ends."""
    while walk.step < len(program):
        kind, spec = kind_of(program[walk.step])
        result = kind.run(spec, walk)
        if result is Next.CONTINUE:
            walk.step += 1
        elif result is Next.JUMP:
            if walk.target <= walk.step:
                raise RuntimeError(f"step {walk.step} jumps back to {walk.target}")
            walk.step = walk.target
        else:
            return
        walk.reached = walk.clock
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
