"""Branching steps: wait for an event (or time out), if/else, and the program's jumps.

* ``{"wait_for": {"event": NAME, "where": [...], "days": N, "then": [...], "else": [...]}}``
  waits until the customer records the event (``hours`` and ``minutes`` work too):
  when it comes in time the run goes on with ``then``, when the time is up with
  ``else``. Only events recorded after the run reached the step count. The run is
  woken as soon as the event is tracked (the ``event`` outbox task), so ``then``
  starts right away; otherwise it is checked when the time is up.
* ``{"branch": {"if": FILTER, "then": [...], "else": [...]}}``: ``then`` when the
  customer matches the filter now, ``else`` otherwise.

Either arm may be left out or empty; after its arm, a run goes on with the steps
that follow the branch (an arm may ``exit``). Both compile into the program as one
instruction holding ``else_at`` (where the ``else`` arm starts), then the ``then``
arm, a ``goto`` past the ``else`` arm (an internal instruction), then the ``else``
arm.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from ..errors import InvalidFilter
from ..models import RunStatus
from ..segments.service import check_filters
from ..values import shift
from .events import check_event_spec, first_match
from .steps import (
    WAIT_UNITS,
    Next,
    Program,
    Step,
    Walk,
    check_duration,
    check_steps,
    describe_duration,
    duration,
    fail,
    matches,
    register,
)

ARMS = ("then", "else")


def _check_arms(session: Session, spec: dict[str, Any], path: str) -> dict[str, Any]:
    """The ``then`` / ``else`` arms that were given, checked."""
    return {
        arm: check_steps(session, spec[arm], f"{path}.{arm}", empty=True)
        for arm in ARMS
        if arm in spec
    }


def _emit_branch(key: str, head: dict[str, Any], spec: dict[str, Any], program: Program) -> None:
    """The instruction ``{key: {**head, "else_at": ...}}``, the arms and their jump."""
    at = program.add(key, head)
    program.nest(spec.get("then", []), "then")
    skip = program.add("goto", 0) if spec.get("else") else None
    else_at = program.here
    program.nest(spec.get("else", []), "else")
    program.instructions[at] = {key: {**head, "else_at": else_at}}
    if skip is not None:
        program.instructions[skip] = {"goto": program.here}


class WaitFor(Step):
    """Wait for an event, up to a time; ``then`` if it comes, ``else`` if not."""

    key = "wait_for"

    def check(self, session: Session, spec: Any, path: str) -> dict[str, Any]:
        if not isinstance(spec, dict):
            raise fail(path, "expected {'event', 'days'|'hours'|'minutes', 'then', 'else'}")
        extra = set(spec) - {"event", "where", *WAIT_UNITS, *ARMS}
        if extra:
            raise fail(f"{path}.{sorted(extra)[0]}", "unknown field")
        condition = check_event_spec(session, spec, path)
        units = check_duration(spec, path)
        if not units:
            raise fail(path, "say how long to wait for it: days, hours or minutes")
        return {**condition, **units, **_check_arms(session, spec, path)}

    def describe(self, spec: Any) -> str:
        where = f" where {json.dumps(spec['where'])}" if spec.get("where") else ""
        return f"Wait up to {describe_duration(spec)} for {spec['event']!r}{where}"

    def emit(self, spec: Any, program: Program) -> None:
        head = {key: value for key, value in spec.items() if key not in ARMS}
        _emit_branch(self.key, head, spec, program)

    def events(self, spec: Any) -> tuple[str, ...]:
        return (spec["event"],)

    def run(self, spec: Any, walk: Walk) -> Next:
        deadline = shift(walk.reached, duration(spec) / duration({"days": 1}))
        seen = first_match(
            walk.session,
            walk.run.customer_id,
            spec,
            walk.reached,
            min(walk.now, deadline),
            walk.now,
        )
        if seen is not None:
            walk.status, walk.clock = RunStatus.ACTIVE, max(seen, walk.reached)
            return Next.CONTINUE
        if deadline <= walk.now:
            walk.status, walk.clock, walk.target = RunStatus.ACTIVE, deadline, spec["else_at"]
            return Next.JUMP
        walk.status, walk.clock = RunStatus.WAITING, deadline
        return Next.PAUSE


class Branch(Step):
    """``then`` when the customer matches a filter now, ``else`` otherwise."""

    key = "branch"

    def check(self, session: Session, spec: Any, path: str) -> dict[str, Any]:
        if not isinstance(spec, dict) or "if" not in spec:
            raise fail(path, "expected {'if': FILTER, 'then': [...], 'else': [...]}")
        extra = set(spec) - {"if", *ARMS}
        if extra:
            raise fail(f"{path}.{sorted(extra)[0]}", "unknown field")
        try:
            condition = check_filters(session, spec["if"])
        except InvalidFilter as exc:
            raise fail(f"{path}.if", str(exc)) from None
        return {"if": condition, **_check_arms(session, spec, path)}

    def describe(self, spec: Any) -> str:
        return f"If the customer matches {json.dumps(spec['if'])}"

    def emit(self, spec: Any, program: Program) -> None:
        _emit_branch(self.key, {"if": spec["if"]}, spec, program)

    def run(self, spec: Any, walk: Walk) -> Next:
        if matches(walk.session, spec["if"], walk.run.customer_id, walk.now):
            return Next.CONTINUE
        walk.target = spec["else_at"]
        return Next.JUMP


class Goto(Step):
    """``{"goto": POSITION}``: compiled programs only (the end of a ``then`` arm)."""

    key = "goto"
    internal = True

    def check(self, session: Session, spec: Any, path: str) -> int:
        raise fail(path, "goto is not a step")

    def describe(self, spec: Any) -> str:
        return f"Go on at step {spec}"

    def run(self, spec: Any, walk: Walk) -> Next:
        walk.target = spec
        return Next.JUMP


for _step in (WaitFor(), Branch(), Goto()):
    register(_step)
