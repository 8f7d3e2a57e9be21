"""Events automations react to: an event trigger, a ``wait_for`` step.

Both name an event and, optionally, conditions on its properties, in the filter
grammar's own form (``{"event": "Purchase", "where": [{"property": "amount", "op":
"gte", "value": 100}]}``): they are checked as a filter's event condition and
compiled by the same code, so every property operator works the same way here.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from ..errors import InvalidAutomation, InvalidFilter
from ..models import Event
from ..segments.compiler import Compiler, read_filter
from ..segments.fields import Field
from ..segments.membership import make_compiler
from ..segments.nodes import EventCondition
from ..segments.service import check_filters

events = Event.__table__


def check_event_spec(session: Session, spec: Mapping[str, Any], path: str) -> dict[str, Any]:
    """``{"event": NAME, "where": [PROPERTY, ...]}`` checked; errors name ``path``
    (``trigger.where[0].op: unknown operator``). Returns the stored form."""
    condition: dict[str, Any] = {"event": spec.get("event")}
    if "where" in spec:
        condition["where"] = spec["where"]
    try:
        check_filters(session, condition)
    except InvalidFilter as exc:
        message, field = str(exc), exc.field or "filters"
        if message.startswith("filters"):
            message, field = path + message[len("filters") :], path + field[len("filters") :]
        raise InvalidAutomation(message, field=field) from None
    stored: dict[str, Any] = {"event": condition["event"]}
    if condition.get("where"):
        stored["where"] = copy.deepcopy(condition["where"])
    return stored


def event_conditions(
    compiler: Compiler, event: str, where: Sequence[Mapping[str, Any]] | None
) -> list[ColumnElement[bool]]:
    """SQL conditions on ``engage_events``: this event, with these property conditions."""
    node = read_filter({"event": event, "where": list(where or [])})
    assert isinstance(node, EventCondition)
    conditions: list[ColumnElement[bool]] = [events.c.name == node.event]
    for row in node.where:
        field = Field(events.c.properties, row.name, compiler.dialect)
        conditions.append(row.compile(compiler, field))
    return conditions


def first_match(
    session: Session,
    customer_id: int,
    spec: Mapping[str, Any],
    since: datetime,
    until: datetime,
    now: datetime,
) -> datetime | None:
    """When the customer first recorded the event of ``spec`` between ``since`` and
    ``until`` (both included), or None."""
    compiler = make_compiler(session, now)
    return session.scalar(
        select(func.min(events.c.occurred_at)).where(
            events.c.customer_id == customer_id,
            events.c.occurred_at >= since,
            events.c.occurred_at <= until,
            *event_conditions(compiler, spec["event"], spec.get("where")),
        )
    )
