"""Automation steps: one class per step kind, in one registry, and the program they
compile to.

A step kind knows how to check its JSON (``{"wait": {...}}``), how to describe
itself in one line for the admin, how it compiles into the automation's program
(:meth:`Step.emit`) and what it does when a run reaches it (:meth:`Step.run`).
The run walker (:mod:`.runs`) knows nothing about the kinds: a new step is one
class and one :func:`register` call.

Steps nest (a branch holds the steps of its arms), but runs walk a flat
**program** compiled from them (:func:`compile_steps`, a pure function of the
stored steps: the same steps always give the same positions): each step becomes
one instruction, a branching step an instruction holding the position of its
``else`` arm (``else_at``), followed by its ``then`` arm, a ``goto`` past the
``else`` arm, and the ``else`` arm. Jumps only go forward, so a walk always ends.
A run's position (``AutomationRun.step``) is an index in the program, so the
unique ``(run_id, step)`` of a message still means "this send, once per run".
Steps without branches compile to themselves.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
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
#: Deepest nesting of branches, and the most instructions a program may have.
MAX_DEPTH = 8
MAX_PROGRAM = 1000


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
    #: Go on at the program position ``walk.target`` (a branch not taken).
    JUMP = "jump"


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
    #: The run's time on the automation's clock (a wait ends at its own time, not
    #: when a worker gets to it).
    clock: datetime
    #: When the current step was reached, on that clock (waits count from here).
    reached: datetime
    queued: int = 0
    #: Where a ``Next.JUMP`` goes.
    target: int = 0


@dataclass
class Program:
    """A program being compiled: its instructions, and an outline of the steps
    (position, nesting, arm, description) for people."""

    instructions: list[dict[str, Any]] = field(default_factory=list)
    outline: list[dict[str, Any]] = field(default_factory=list)
    depth: int = 0

    @property
    def here(self) -> int:
        """The position of the next instruction."""
        return len(self.instructions)

    def add(self, key: str, spec: Any) -> int:
        """Append an instruction; returns its position."""
        self.instructions.append({key: spec})
        return self.here - 1

    def nest(self, steps: list[dict[str, Any]], arm: str) -> None:
        """Compile the steps of a branch's arm, one level deeper."""
        self.depth += 1
        emit_steps(self, steps, arm)
        self.depth -= 1


class Step(ABC):
    """One kind of automation step."""

    #: The key of the step's JSON object (``"wait"``).
    key: ClassVar[str]
    #: Only compiled programs hold it (``goto``): steps given by people may not.
    internal: ClassVar[bool] = False

    @abstractmethod
    def check(self, session: Session, spec: Any, path: str) -> Any:
        """Validate the step's value; return what is stored."""

    @abstractmethod
    def describe(self, spec: Any) -> str:
        """One line for people (``Wait 3 days``)."""

    @abstractmethod
    def run(self, spec: Any, walk: Walk) -> Next:
        """Do the step for one run."""

    def emit(self, spec: Any, program: Program) -> None:
        """Compile the checked step into the program (default: one instruction, itself)."""
        program.add(self.key, spec)

    def events(self, spec: Any) -> tuple[str, ...]:
        """Names of the events a run at this instruction waits for (none by default)."""
        return ()


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


def check_duration(spec: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The ``days`` / ``hours`` / ``minutes`` of a spec: numbers >= 0, 100 years at most."""
    units = {unit: spec[unit] for unit in WAIT_UNITS if unit in spec}
    for unit, amount in units.items():
        if (
            isinstance(amount, bool)
            or not isinstance(amount, int | float)
            or not 0 <= amount <= MAX_WAIT / timedelta(**{unit: 1})
        ):
            raise fail(f"{path}.{unit}", "expected a number >= 0, at most 100 years")
    if duration(units) > MAX_WAIT:
        raise fail(path, "a wait may last at most 100 years")
    return units


def describe_duration(spec: Mapping[str, Any]) -> str:
    """``3 days, 2 hours``."""
    return ", ".join(f"{spec[unit]:g} {unit}" for unit in WAIT_UNITS if unit in spec)


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
        check_duration(spec, path)
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
    """Every step kind's key that people may use, in registration order."""
    return tuple(key for key, kind in _registry.items() if not kind.internal)


def kind_of(step: Mapping[str, Any]) -> tuple[Step, Any]:
    """The step kind of a stored step (or program instruction) and its value."""
    ((key, spec),) = step.items()
    return _registry[key], spec


def check_steps(
    session: Session, steps: Any, path: str = "steps", *, empty: bool = False
) -> list[dict[str, Any]]:
    """Check a list of steps, naming the bad one (``steps[2].send.channel: ...``).

    ``empty``: an empty list is fine (a branch's arm). Branches check their arms
    through here, one level deeper each time (at most :data:`MAX_DEPTH`).
    """
    if not isinstance(steps, list) or not (steps or empty):
        raise fail(path, "expected a non-empty list of steps" if not empty else "expected a list")
    if path.count("[") >= MAX_DEPTH:
        raise fail(path, f"branches may nest at most {MAX_DEPTH} deep")
    keys = ", ".join(f"'{key}'" for key in step_keys())
    checked = []
    for index, step in enumerate(steps):
        where = f"{path}[{index}]"
        if not isinstance(step, dict) or len(step) != 1:
            raise fail(where, f"expected an object with one of {keys}")
        ((key, spec),) = step.items()
        kind = _registry.get(key)
        if kind is None or kind.internal:
            raise fail(where, f"unknown step {key!r}; expected one of {keys}")
        checked.append({key: kind.check(session, spec, f"{where}.{key}")})
    return checked


def emit_steps(program: Program, steps: list[dict[str, Any]], arm: str | None = None) -> None:
    """Compile checked steps into ``program``, noting each in its outline."""
    for step in steps:
        kind, spec = kind_of(step)
        program.outline.append(
            {
                "step": program.here,
                "depth": program.depth,
                "arm": arm,
                "kind": kind.key,
                "description": kind.describe(spec),
            }
        )
        kind.emit(spec, program)


def compile_steps(steps: list[dict[str, Any]]) -> Program:
    """The program of checked steps (see the module's docstring)."""
    program = Program()
    emit_steps(program, steps)
    if program.here > MAX_PROGRAM:
        raise fail("steps", f"too many steps: {program.here} once compiled (at most {MAX_PROGRAM})")
    return program


def program_of(automation: Automation) -> list[dict[str, Any]]:
    """The program an automation's runs walk (its steps, compiled)."""
    return compile_steps(automation.steps).instructions


def watched_events(program: list[dict[str, Any]]) -> list[str]:
    """Names of the events runs of a program wait for, sorted."""
    names: set[str] = set()
    for instruction in program:
        kind, spec = kind_of(instruction)
        names.update(kind.events(spec))
    return sorted(names)


def describe_step(step: Mapping[str, Any]) -> str:
    """One line describing a stored step."""
    kind, spec = kind_of(step)
    return kind.describe(spec)
