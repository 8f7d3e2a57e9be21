"""Automations as users see them: create, update, pause, delete, and their numbers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ..lists.service import find_list
from ..messages.outcomes import step_outcomes
from ..models import (
    LIST_TRIGGERS,
    LIVE_RUNS,
    Automation,
    AutomationRun,
    Message,
    RunStatus,
    Segment,
    TriggerKind,
    utcnow,
)
from ..segments.service import find_segment
from ..tracking import forget_watched_events
from .events import check_event_spec
from .steps import check_steps, compile_steps, fail, watched_events

#: The segment triggers (``{"joins": segment}``).
SEGMENT_TRIGGERS = (TriggerKind.JOINS, TriggerKind.LEAVES)


@dataclass(frozen=True)
class Trigger:
    """A checked trigger, as the automation's columns store it."""

    kind: str
    segment_id: int | None = None
    list_id: int | None = None
    event: str | None = None
    where: list[dict[str, Any]] | None = None

    def columns(self) -> dict[str, Any]:
        return {
            "trigger_kind": self.kind,
            "trigger_segment_id": self.segment_id,
            "trigger_list_id": self.list_id,
            "trigger_event": self.event,
            "trigger_where": self.where,
        }


def check_trigger(session: Session, trigger: Any) -> Trigger:
    """``{"joins": segment}``, ``{"leaves": segment}``, ``{"subscribes": list}``,
    ``{"unsubscribes": list}`` or ``{"event": NAME, "where": [PROPERTY, ...]}``, checked
    (errors name ``trigger...``)."""
    if isinstance(trigger, Mapping) and TriggerKind.EVENT in trigger:
        extra = set(trigger) - {"event", "where"}
        if extra:
            raise fail(f"trigger.{sorted(extra)[0]}", "unknown field of an event trigger")
        spec = check_event_spec(session, trigger, "trigger")
        return Trigger(TriggerKind.EVENT, event=spec["event"], where=spec.get("where"))
    if not isinstance(trigger, Mapping) or len(trigger) != 1:
        raise fail(
            "trigger",
            "expected {'joins': segment}, {'leaves': segment}, {'subscribes': list} or"
            " {'event': name}",
        )
    ((kind, ref),) = trigger.items()
    if kind in LIST_TRIGGERS:
        found = find_list(session, ref)
        if found is None:
            raise fail(f"trigger.{kind}", f"no list {ref!r}")
        return Trigger(kind, list_id=found.id)
    if kind not in SEGMENT_TRIGGERS:
        raise fail(
            f"trigger.{kind}",
            "expected 'joins' or 'leaves' (a segment), 'subscribes' or 'unsubscribes' (a list),"
            " or 'event'",
        )
    segment = find_segment(session, ref.id if isinstance(ref, Segment) else ref)
    if segment is None:
        raise fail(f"trigger.{kind}", f"no segment {ref!r}")
    return Trigger(kind, segment_id=segment.id)


def _set_steps(automation: Automation, trigger: Trigger, steps: list[dict[str, Any]]) -> None:
    """Store checked steps (compiled once: a program too large is refused) and the
    events the automation reacts to."""
    watched = set(watched_events(compile_steps(steps).instructions))
    if trigger.event is not None:
        watched.add(trigger.event)
    automation.steps = steps
    automation.watched_events = sorted(watched)


def check_name(session: Session, name: Any, current: Automation | None = None) -> str:
    """A trimmed automation name that no other automation has (in any letter case)."""
    if not isinstance(name, str) or not name.strip():
        raise fail("name", "an automation needs a name")
    name = name.strip()
    if len(name) > 200:
        raise fail("name", "longer than 200 characters")
    clash = session.scalar(
        select(Automation).where(func.lower(Automation.name) == name.lower()).limit(1)
    )
    if clash is not None and (current is None or clash.id != current.id):
        raise fail("name", f"an automation named {clash.name!r} already exists")
    return name


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
    name = check_name(session, name)
    checked = check_trigger(session, trigger)
    automation = Automation(
        name=name,
        **checked.columns(),
        active=bool(active),
        reentry=bool(reentry),
        exit_on_leave=bool(exit_on_leave),
    )
    _set_steps(automation, checked, check_steps(session, steps))
    session.add(automation)
    session.flush()
    forget_watched_events()
    return automation


def update_automation(session: Session, automation: Automation, **changes: Any) -> Automation:
    """Change name, trigger, steps or flags (validated like creation).

    ``active=False`` pauses: live runs are held where they are (and resume, with
    whatever became due, once re-activated); customers who join or leave while it
    is paused do not start a run.
    """
    unknown = set(changes) - {"name", "trigger", "steps", "active", "reentry", "exit_on_leave"}
    if unknown:
        raise fail(sorted(unknown)[0], "unknown field")
    if changes.get("name") is not None:
        automation.name = check_name(session, str(changes["name"]), automation)
    trigger = (
        check_trigger(session, changes["trigger"])
        if changes.get("trigger") is not None
        else check_trigger(session, automation.trigger)
    )
    steps = automation.steps
    if changes.get("steps") is not None:
        steps = check_steps(session, changes["steps"])
    for column, value in trigger.columns().items():
        setattr(automation, column, value)
    _set_steps(automation, trigger, steps)
    for flag in ("active", "reentry", "exit_on_leave"):
        if changes.get(flag) is not None:
            setattr(automation, flag, bool(changes[flag]))
    session.flush()
    forget_watched_events()
    return automation


def delete_automation(session: Session, automation: Automation) -> None:
    """Cancel its live runs and delete it (sent messages stay, unlinked)."""
    session.execute(
        update(AutomationRun)
        .where(AutomationRun.automation_id == automation.id, AutomationRun.status.in_(LIVE_RUNS))
        .values(status=RunStatus.CANCELLED, updated_at=utcnow())
    )
    session.delete(automation)
    session.flush()
    forget_watched_events()


def automation_stats(session: Session, automation: Automation) -> dict[str, Any]:
    """Runs by status, messages by step and status, and for the admin: the steps
    (``steps``: the program's outline, one entry per step with its position, nesting
    and arm) and the outcomes of each send step with rates (``outcomes_by_step``,
    keyed by position; see :mod:`flask_engage.messages.outcomes`)."""
    runs = dict(
        session.execute(
            select(AutomationRun.status, func.count())
            .where(AutomationRun.automation_id == automation.id)
            .group_by(AutomationRun.status)
        ).all()
    )
    per_step: dict[int | None, dict[str, int]] = {}
    for step, status, n in session.execute(
        select(Message.step, Message.status, func.count())
        .where(Message.automation_id == automation.id)
        .group_by(Message.step, Message.status)
    ):
        per_step.setdefault(step, {})[status] = n
    return {
        "runs": {status.value: runs.get(status, 0) for status in RunStatus},
        "messages_by_step": per_step,
        "steps": compile_steps(automation.steps).outline,
        "outcomes_by_step": step_outcomes(session, automation.id),
    }
