"""Automations as users see them: create, update, pause, delete, and their numbers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ..lists.service import find_list
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
from .steps import check_steps, fail


def check_trigger(session: Session, trigger: Any) -> dict[str, Any]:
    """``{"joins"|"leaves": segment}`` or ``{"subscribes"|"unsubscribes": list}`` -> the
    automation's trigger columns (``trigger_kind``, ``trigger_segment_id``,
    ``trigger_list_id``)."""
    if not isinstance(trigger, Mapping) or len(trigger) != 1:
        raise fail("trigger", "expected {'joins': segment} or {'subscribes': list}")
    ((kind, ref),) = trigger.items()
    if kind not in tuple(TriggerKind):
        raise fail(
            f"trigger.{kind}",
            "expected 'joins' or 'leaves' (a segment), 'subscribes' or 'unsubscribes' (a list)",
        )
    if kind in LIST_TRIGGERS:
        found = find_list(session, ref)
        if found is None:
            raise fail(f"trigger.{kind}", f"no list {ref!r}")
        if found.archived_at is not None:
            raise fail(f"trigger.{kind}", f"list {found.name!r} is archived")
        return {"trigger_kind": kind, "trigger_segment_id": None, "trigger_list_id": found.id}
    segment = find_segment(session, ref.id if isinstance(ref, Segment) else ref)
    if segment is None:
        raise fail(f"trigger.{kind}", f"no segment {ref!r}")
    return {"trigger_kind": kind, "trigger_segment_id": segment.id, "trigger_list_id": None}


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
    automation = Automation(
        name=name,
        **check_trigger(session, trigger),
        steps=check_steps(session, steps),
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
        raise fail(sorted(unknown)[0], "unknown field")
    if changes.get("name") is not None:
        automation.name = check_name(session, str(changes["name"]), automation)
    if changes.get("trigger") is not None:
        for column, value in check_trigger(session, changes["trigger"]).items():
            setattr(automation, column, value)
    if changes.get("steps") is not None:
        automation.steps = check_steps(session, changes["steps"])
    for flag in ("active", "reentry", "exit_on_leave"):
        if changes.get(flag) is not None:
            setattr(automation, flag, bool(changes[flag]))
    session.flush()
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


def automation_stats(session: Session, automation: Automation) -> dict[str, Any]:
    """Runs by status, and messages by step and status, for the admin."""
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
    }
