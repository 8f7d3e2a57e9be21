"""Automations: steps walked by customers who join or leave a segment.

Runs are created set-based, in the transaction of the membership change that
triggers them (:func:`start_runs`). :func:`advance_runs` walks every due run as
far as it can go (until a wait, the end, or an exit); each run's progress is a
compare-and-set on its ``(step, status)``, and a send step writes its message
row with a unique ``(run_id, step)``, so a step is executed once even when two
workers race.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import current_app
from sqlalchemy import and_, case, exists, func, insert, literal, select, update
from sqlalchemy.orm import Session

from .channels import get_channel
from .db import insert_ignoring_conflicts
from .errors import InvalidAutomation, InvalidFilter, ValidationError
from .models import Automation, AutomationRun, Customer, MembershipChange, Message, Segment, utcnow

LIVE = ("active", "waiting")


# --- definition ------------------------------------------------------------------------


def _fail(path: str, message: str) -> InvalidAutomation:
    return InvalidAutomation(f"{path}: {message}", field=path)


def validate_steps(session: Session, steps: Any) -> list[dict[str, Any]]:
    """Check steps, naming the bad one (``steps[2].send.channel: ...``)."""
    from .segments.service import check_filters

    if not isinstance(steps, list) or not steps:
        raise _fail("steps", "expected a non-empty list of steps")
    result = []
    for index, step in enumerate(steps):
        path = f"steps[{index}]"
        if not isinstance(step, dict) or len(step) != 1:
            raise _fail(path, "expected an object with one of 'wait', 'if', 'send', 'exit'")
        ((kind, spec),) = step.items()
        if kind == "wait":
            result.append({"wait": _check_wait(spec, f"{path}.wait")})
        elif kind == "if":
            try:
                result.append({"if": check_filters(session, spec)})
            except InvalidFilter as exc:
                raise _fail(f"{path}.if", str(exc)) from None
        elif kind == "send":
            result.append({"send": _check_send(spec, f"{path}.send")})
        elif kind == "exit":
            if spec is not True:
                raise _fail(f"{path}.exit", "expected true")
            result.append({"exit": True})
        else:
            raise _fail(path, f"unknown step {kind!r}; expected 'wait', 'if', 'send' or 'exit'")
    return result


def _check_send(spec: Any, path: str) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise _fail(path, "expected {'channel', 'subject', 'body'}")
    try:
        channel = get_channel(spec.get("channel"), f"{path}.channel")
        extra = set(spec) - {"channel", "subject", "body", *channel.options}
        if extra:
            raise _fail(f"{path}.{sorted(extra)[0]}", "unknown field")
        return channel.check(spec, f"{path}.")
    except ValidationError as exc:
        raise InvalidAutomation(str(exc), field=exc.field) from None


def _check_wait(spec: Any, path: str) -> dict[str, Any]:
    if not isinstance(spec, dict) or not spec:
        raise _fail(path, "expected {'days'|'hours'|'minutes': N} or {'until': 'HH:MM'}")
    if "until" in spec:
        if set(spec) != {"until"}:
            raise _fail(path, "'until' cannot be combined with a duration")
        try:
            time.fromisoformat(spec["until"])
        except (TypeError, ValueError):
            raise _fail(
                f"{path}.until", f"expected a time of day like '09:00', got {spec['until']!r}"
            ) from None
        return {"until": spec["until"]}
    extra = set(spec) - {"days", "hours", "minutes"}
    if extra:
        raise _fail(f"{path}.{sorted(extra)[0]}", "unknown unit; use days, hours or minutes")
    for unit, amount in spec.items():
        if isinstance(amount, bool) or not isinstance(amount, int | float) or amount < 0:
            raise _fail(f"{path}.{unit}", "expected a number >= 0")
    return dict(spec)


def check_trigger(session: Session, trigger: Any) -> tuple[str, int]:
    """``{"joins": segment}`` / ``{"leaves": segment}`` -> (kind, segment id)."""
    from .segments.service import find_segment

    if not isinstance(trigger, Mapping) or len(trigger) != 1:
        raise _fail("trigger", "expected {'joins': segment} or {'leaves': segment}")
    ((kind, ref),) = trigger.items()
    if kind not in ("joins", "leaves"):
        raise _fail(f"trigger.{kind}", "expected 'joins' or 'leaves'")
    segment = find_segment(session, ref.id if isinstance(ref, Segment) else ref)
    if segment is None:
        raise _fail(f"trigger.{kind}", f"no segment {ref!r}")
    return kind, segment.id


def create_automation(
    session: Session,
    name: str,
    *,
    trigger: Any,
    steps: Any,
    active: bool = True,
    reentry: bool = False,
    exit_on_leave: bool = False,
) -> Automation:
    """Insert a validated automation."""
    if not isinstance(name, str) or not name.strip():
        raise _fail("name", "an automation needs a name")
    kind, segment_id = check_trigger(session, trigger)
    automation = Automation(
        name=name.strip(),
        trigger_kind=kind,
        trigger_segment_id=segment_id,
        steps=validate_steps(session, steps),
        active=bool(active),
        reentry=bool(reentry),
        exit_on_leave=bool(exit_on_leave),
    )
    session.add(automation)
    session.flush()
    return automation


def update_automation(session: Session, automation: Automation, **changes: Any) -> Automation:
    """Change name, trigger, steps or flags (validated like creation).

    ``active=False`` pauses: live runs are held where they are (and resume, with
    whatever became due, once re-activated); customers who join or leave while it
    is paused do not start a run.
    """
    unknown = set(changes) - {"name", "trigger", "steps", "active", "reentry", "exit_on_leave"}
    if unknown:
        raise _fail(sorted(unknown)[0], "unknown field")
    if changes.get("name") is not None:
        if not str(changes["name"]).strip():
            raise _fail("name", "an automation needs a name")
        automation.name = str(changes["name"]).strip()
    if changes.get("trigger") is not None:
        automation.trigger_kind, automation.trigger_segment_id = check_trigger(
            session, changes["trigger"]
        )
    if changes.get("steps") is not None:
        automation.steps = validate_steps(session, changes["steps"])
    for flag in ("active", "reentry", "exit_on_leave"):
        if changes.get(flag) is not None:
            setattr(automation, flag, bool(changes[flag]))
    session.flush()
    return automation


def delete_automation(session: Session, automation: Automation) -> None:
    """Cancel its live runs and delete it (sent messages stay, unlinked)."""
    session.execute(
        update(AutomationRun)
        .where(AutomationRun.automation_id == automation.id, AutomationRun.status.in_(LIVE))
        .values(status="cancelled", updated_at=utcnow())
    )
    session.delete(automation)
    session.flush()


# --- runs --------------------------------------------------------------------------------


def start_runs(session: Session, computation: str, now: datetime) -> None:
    """Start runs for a computation's joins/leaves, and exit runs on leave. Set-based."""
    changes = MembershipChange.__table__
    runs = AutomationRun.__table__
    autos = Automation.__table__
    involved = select(changes.c.segment_id).where(changes.c.computation == computation)
    if (
        session.scalar(select(autos.c.id).where(autos.c.trigger_segment_id.in_(involved)).limit(1))
        is None
    ):
        return  # no automation watches these segments: skip building the set-based statements
    trigger = case((changes.c.kind == "joined", "joins"), else_="leaves")
    previous = (
        select(func.max(runs.c.entry))
        .where(runs.c.automation_id == autos.c.id, runs.c.customer_id == changes.c.customer_id)
        .scalar_subquery()
    )
    blocked = exists().where(
        runs.c.automation_id == autos.c.id,
        runs.c.customer_id == changes.c.customer_id,
        (autos.c.reentry.is_(False)) | runs.c.status.in_(LIVE),
    )
    at = literal(now, runs.c.due_at.type)
    session.execute(
        insert(runs).from_select(
            [
                "automation_id",
                "customer_id",
                "entry",
                "step",
                "status",
                "due_at",
                "started_at",
                "updated_at",
            ],
            select(
                autos.c.id,
                changes.c.customer_id,
                func.coalesce(previous, 0) + 1,
                literal(0),
                literal("active"),
                at,
                at,
                at,
            )
            .select_from(
                changes.join(
                    autos,
                    and_(
                        autos.c.trigger_segment_id == changes.c.segment_id,
                        autos.c.trigger_kind == trigger,
                    ),
                )
            )
            .where(changes.c.computation == computation, autos.c.active.is_(True), ~blocked),
        )
    )
    leavers = (
        select(autos.c.id, changes.c.customer_id)
        .select_from(changes.join(autos, autos.c.trigger_segment_id == changes.c.segment_id))
        .where(
            changes.c.computation == computation,
            changes.c.kind == "left",
            autos.c.trigger_kind == "joins",
            autos.c.exit_on_leave.is_(True),
        )
    )
    from sqlalchemy import tuple_

    session.execute(
        update(runs)
        .where(
            runs.c.status.in_(LIVE), tuple_(runs.c.automation_id, runs.c.customer_id).in_(leavers)
        )
        .values(status="exited", updated_at=now)
    )


def _zone_for(customer: Customer) -> ZoneInfo:
    name = (customer.attributes or {}).get("timezone") or current_app.config["ENGAGE_TIMEZONE"]
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(current_app.config["ENGAGE_TIMEZONE"])


def wait_until(spec: Mapping[str, Any], start: datetime, customer: Customer) -> datetime:
    """When a wait step that begins at ``start`` ends."""
    if "until" in spec:
        zone = _zone_for(customer)
        local = start.astimezone(zone)
        target = datetime.combine(local.date(), time.fromisoformat(spec["until"]), tzinfo=zone)
        if target <= local:
            target = datetime.combine(
                local.date() + timedelta(days=1), time.fromisoformat(spec["until"]), tzinfo=zone
            )
        return target.astimezone(start.tzinfo)
    return start + timedelta(
        days=spec.get("days", 0), hours=spec.get("hours", 0), minutes=spec.get("minutes", 0)
    )


def _matches(session: Session, filters: dict[str, Any], customer_id: int, now: datetime) -> bool:
    from .segments.membership import make_compiler

    compiler = make_compiler(session, now, customer_ids=[customer_id])
    return session.scalar(compiler.query(filters)) is not None


def advance_run(session: Session, run: AutomationRun, automation: Automation, now: datetime) -> int:
    """Walk one due run as far as it goes; returns the number of messages queued.

    Must run inside a transaction (a savepoint per run); the final compare-and-set
    fails (and the caller rolls back) if another worker moved the run first.
    """
    step, status, clock = run.step, run.status, run.due_at
    queued = 0
    customer = session.get(Customer, run.customer_id)
    steps = automation.steps
    while True:
        if customer is None or step >= len(steps):
            status = "completed" if customer is not None else "cancelled"
            break
        ((kind, spec),) = steps[step].items()
        if kind == "wait" and status != "waiting":
            clock = wait_until(spec, clock, customer)
            status = "waiting"
            if clock > now:
                break
            continue
        if kind == "wait":  # the wait is over
            status, step = "active", step + 1
            continue
        if kind == "if":
            if not _matches(session, spec, run.customer_id, now):
                status = "exited"
                break
        elif kind == "send":
            result = session.execute(
                insert_ignoring_conflicts(session, Message.__table__, ["run_id", "step"]),
                [
                    {
                        "customer_id": run.customer_id,
                        "channel": spec["channel"],
                        "status": "queued",
                        "automation_id": automation.id,
                        "run_id": run.id,
                        "step": step,
                        "created_at": now,
                    }
                ],
            )
            queued += max(result.rowcount or 0, 0)
        elif kind == "exit":
            status = "exited"
            break
        step += 1
    moved = session.execute(
        update(AutomationRun)
        .where(
            AutomationRun.id == run.id,
            AutomationRun.step == run.step,
            AutomationRun.status == run.status,
        )
        .values(step=step, status=status, due_at=clock, updated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if moved != 1:
        raise _RunMoved()
    return queued


class _RunMoved(Exception):
    """Another worker advanced this run first."""


def advance_runs(session: Session, now: datetime, limit: int = 200) -> tuple[int, int]:
    """Advance up to ``limit`` due runs; returns (runs advanced, messages queued).

    On PostgreSQL due runs are claimed with ``FOR UPDATE SKIP LOCKED`` so
    concurrent workers take different runs; elsewhere the compare-and-set in
    :func:`advance_run` keeps a step from running twice.
    """
    query = (
        select(AutomationRun)
        .join(Automation, Automation.id == AutomationRun.automation_id)
        .where(
            AutomationRun.status.in_(LIVE), AutomationRun.due_at <= now, Automation.active.is_(True)
        )
        .order_by(AutomationRun.due_at, AutomationRun.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=AutomationRun)
    advanced = queued = 0
    automations: dict[int, Automation] = {}
    for run in session.scalars(query).all():
        automation = automations.get(run.automation_id) or session.get(
            Automation, run.automation_id
        )
        automations[run.automation_id] = automation
        try:
            with session.begin_nested():
                queued += advance_run(session, run, automation, now)
            advanced += 1
        except _RunMoved:
            continue
    return advanced, queued


def automation_stats(session: Session, automation: Automation) -> dict[str, Any]:
    """Runs by status, and messages by step and status, for the admin."""
    runs = dict(
        session.execute(
            select(AutomationRun.status, func.count())
            .where(AutomationRun.automation_id == automation.id)
            .group_by(AutomationRun.status)
        ).all()
    )
    per_step: dict[int, dict[str, int]] = {}
    for step, status, n in session.execute(
        select(Message.step, Message.status, func.count())
        .where(Message.automation_id == automation.id)
        .group_by(Message.step, Message.status)
    ):
        per_step.setdefault(step, {})[status] = n
    return {
        "runs": {
            s: runs.get(s, 0) for s in ("active", "waiting", "completed", "exited", "cancelled")
        },
        "messages_by_step": per_step,
    }
