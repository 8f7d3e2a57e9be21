"""Automation steps: one class per step kind, in one registry.

A step kind knows how to check its JSON (``{"wait": {...}}``), how to describe
itself in one line for the admin, and what it does when a run reaches it
(:meth:`Step.run`). The run walker (:mod:`.runs`) knows nothing about the kinds:
a new step is one class here and one :func:`register` call.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import Enum
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy.orm import Session

from ..channels import get_channel
from ..db import insert_ignoring_conflicts, log, rowcount
from ..errors import InvalidAutomation, InvalidFilter, ValidationError
from ..models import (
    Automation,
    AutomationRun,
    Customer,
    Message,
    MessageStatus,
    RunStatus,
)
from ..segments.membership import make_compiler
from ..segments.service import check_filters

#: The longest wait a step may ask for (what ``datetime`` arithmetic can always do).
MAX_WAIT = timedelta(days=36500)
WAIT_UNITS = ("days", "hours", "minutes")


def fail(path: str, message: str) -> InvalidAutomation:
    """An :class:`InvalidAutomation` whose message starts with ``path``."""
    return InvalidAutomation(f"{path}: {message}", field=path)


class Next(Enum):
    """What a step tells the walker."""

    #: Go on with the following step.
    CONTINUE = "continue"
    #: Stop here until ``walk.clock`` (a wait).
    PAUSE = "pause"
    #: The run ends with ``walk.status``.
    END = "end"


@dataclass
class Walk:
    """One run being walked: where it is, and what the steps did."""

    session: Session
    run: AutomationRun
    automation: Automation
    customer: Customer
    now: datetime
    step: int
    status: RunStatus
    #: When the current step was reached (waits count from here).
    clock: datetime
    queued: int = 0


class Step(ABC):
    """One kind of automation step."""

    #: The key of the step's JSON object (``"wait"``).
    key: ClassVar[str]

    @abstractmethod
    def check(self, session: Session, spec: Any, path: str) -> Any:
        """Validate the step's value; return what is stored."""

    @abstractmethod
    def describe(self, spec: Any) -> str:
        """One line for people (``Wait 3 days``)."""

    @abstractmethod
    def run(self, spec: Any, walk: Walk) -> Next:
        """Do the step for one run."""


# --- wait -------------------------------------------------------------------------------------


def customer_zone(customer: Customer) -> ZoneInfo:
    """The customer's ``timezone`` attribute, else ``ENGAGE_TIMEZONE``.

    Any bad value (unknown name, ``"America"``, a 300-character string) falls back
    to ``ENGAGE_TIMEZONE`` with a warning: one customer's data never stops a run.
    """
    default = current_app.config["ENGAGE_TIMEZONE"]
    name = (customer.attributes or {}).get("timezone")
    if name is None or name == "":
        return ZoneInfo(default)
    try:
        return ZoneInfo(str(name)[:64])
    except Exception:  # ZoneInfoNotFoundError, IsADirectoryError, ValueError...
        log.warning(
            "flask-engage: customer %s has an unknown timezone %r; using %s",
            customer.external_id,
            str(name)[:64],
            default,
        )
        return ZoneInfo(default)


def wait_until(spec: Mapping[str, Any], start: datetime, customer: Customer) -> datetime:
    """When a wait step that begins at ``start`` ends."""
    if "until" in spec:
        zone = customer_zone(customer)
        local = start.astimezone(zone)
        at = time.fromisoformat(spec["until"])
        target = datetime.combine(local.date(), at, tzinfo=zone)
        if target <= local:
            target = datetime.combine(local.date() + timedelta(days=1), at, tzinfo=zone)
        return target.astimezone(start.tzinfo)
    return start + duration(spec)


def duration(spec: Mapping[str, Any]) -> timedelta:
    """``{"days": 1, "hours": 2}`` as a timedelta."""
    return timedelta(**{unit: spec.get(unit, 0) for unit in WAIT_UNITS})


class Wait(Step):
    """``{"wait": {"days": 3}}`` or ``{"wait": {"until": "09:00"}}`` (customer's time zone)."""

    key = "wait"

    def check(self, session: Session, spec: Any, path: str) -> dict[str, Any]:
        if not isinstance(spec, dict) or not spec:
            raise fail(path, "expected {'days'|'hours'|'minutes': N} or {'until': 'HH:MM'}")
        if "until" in spec:
            if set(spec) != {"until"}:
                raise fail(path, "'until' cannot be combined with a duration")
            try:
                time.fromisoformat(spec["until"])
            except (TypeError, ValueError):
                raise fail(
                    f"{path}.until", f"expected a time of day like '09:00', got {spec['until']!r}"
                ) from None
            return {"until": spec["until"]}
        extra = set(spec) - set(WAIT_UNITS)
        if extra:
            raise fail(f"{path}.{sorted(extra)[0]}", "unknown unit; use days, hours or minutes")
        for unit, amount in spec.items():
            if (
                isinstance(amount, bool)
                or not isinstance(amount, int | float)
                or not 0 <= amount <= MAX_WAIT / timedelta(**{unit: 1})
            ):
                raise fail(f"{path}.{unit}", "expected a number >= 0, at most 100 years")
        if duration(spec) > MAX_WAIT:
            raise fail(path, "a wait may last at most 100 years")
        return dict(spec)

    def describe(self, spec: Any) -> str:
        if "until" in spec:
            return f"Wait until {spec['until']}"
        return "Wait " + ", ".join(f"{amount:g} {unit}" for unit, amount in spec.items())

    def run(self, spec: Any, walk: Walk) -> Next:
        if walk.status != RunStatus.WAITING:
            walk.clock = wait_until(spec, walk.clock, walk.customer)
            walk.status = RunStatus.WAITING
        if walk.clock > walk.now:
            return Next.PAUSE
        walk.status = RunStatus.ACTIVE
        return Next.CONTINUE


# --- if -----------------------------------------------------------------------------------------


def matches(session: Session, filters: dict[str, Any], customer_id: int, now: datetime) -> bool:
    """Whether one customer matches a filter now."""
    compiler = make_compiler(session, now, customer_ids=[customer_id])
    return session.scalar(compiler.query(filters)) is not None


class If(Step):
    """``{"if": FILTER}``: go on only while the customer matches; otherwise the run exits."""

    key = "if"

    def check(self, session: Session, spec: Any, path: str) -> dict[str, Any]:
        try:
            return check_filters(session, spec)
        except InvalidFilter as exc:
            raise fail(path, str(exc)) from None

    def describe(self, spec: Any) -> str:
        return f"Continue only if the customer matches {json.dumps(spec)}"

    def run(self, spec: Any, walk: Walk) -> Next:
        if matches(walk.session, spec, walk.run.customer_id, walk.now):
            return Next.CONTINUE
        walk.status = RunStatus.EXITED
        return Next.END


# --- send ---------------------------------------------------------------------------------------


class Send(Step):
    """``{"send": {"channel": ..., "subject": ..., "body": ...}}``: queue one message.

    The message row is unique per (run, step), so a step replayed after a crash or
    by a second worker queues nothing twice.
    """

    key = "send"

    def check(self, session: Session, spec: Any, path: str) -> dict[str, Any]:
        if not isinstance(spec, dict):
            raise fail(path, "expected {'channel', 'subject', 'body'}")
        try:
            channel = get_channel(spec.get("channel"), f"{path}.channel")
            extra = set(spec) - {"channel", "subject", "body", *channel.options}
            if extra:
                raise fail(f"{path}.{sorted(extra)[0]}", "unknown field")
            return channel.check(spec, f"{path}.")
        except ValidationError as exc:
            raise InvalidAutomation(str(exc), field=exc.field) from None

    def describe(self, spec: Any) -> str:
        subject = f": {spec['subject']!r}" if spec.get("subject") else ""
        return f"Send {get_channel(spec['channel']).label.lower()}{subject}"

    def run(self, spec: Any, walk: Walk) -> Next:
        result = walk.session.execute(
            insert_ignoring_conflicts(walk.session, Message.__table__, ["run_id", "step"]),
            [
                {
                    "customer_id": walk.run.customer_id,
                    "channel": spec["channel"],
                    "status": MessageStatus.QUEUED,
                    "automation_id": walk.automation.id,
                    "run_id": walk.run.id,
                    "step": walk.step,
                    "created_at": walk.now,
                }
            ],
        )
        walk.queued += max(rowcount(result) or 0, 0)
        return Next.CONTINUE


# --- exit ---------------------------------------------------------------------------------------


class Exit(Step):
    """``{"exit": true}``: end the run here."""

    key = "exit"

    def check(self, session: Session, spec: Any, path: str) -> bool:
        if spec is not True:
            raise fail(path, "expected true")
        return True

    def describe(self, spec: Any) -> str:
        return "Exit"

    def run(self, spec: Any, walk: Walk) -> Next:
        walk.status = RunStatus.EXITED
        return Next.END


# --- the registry -----------------------------------------------------------------------------

_registry: dict[str, Step] = {}


def register(step: Step) -> Step:
    """Add a step kind (a later one with the same key replaces it)."""
    _registry[step.key] = step
    return step


for _step in (Wait(), If(), Send(), Exit()):
    register(_step)


def step_keys() -> tuple[str, ...]:
    """Every step kind's key, in registration order."""
    return tuple(_registry)


def kind_of(step: Mapping[str, Any]) -> tuple[Step, Any]:
    """The step kind of a stored step and its value."""
    ((key, spec),) = step.items()
    return _registry[key], spec


def check_steps(session: Session, steps: Any) -> list[dict[str, Any]]:
    """Check a list of steps, naming the bad one (``steps[2].send.channel: ...``)."""
    if not isinstance(steps, list) or not steps:
        raise fail("steps", "expected a non-empty list of steps")
    keys = ", ".join(f"'{key}'" for key in _registry)
    checked = []
    for index, step in enumerate(steps):
        path = f"steps[{index}]"
        if not isinstance(step, dict) or len(step) != 1:
            raise fail(path, f"expected an object with one of {keys}")
        ((key, spec),) = step.items()
        kind = _registry.get(key)
        if kind is None:
            raise fail(path, f"unknown step {key!r}; expected one of {keys}")
        checked.append({key: kind.check(session, spec, f"{path}.{key}")})
    return checked


def describe_step(step: Mapping[str, Any]) -> str:
    """One line describing a stored step."""
    kind, spec = kind_of(step)
    return kind.describe(spec)
