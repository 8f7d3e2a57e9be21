"""Reading segments and the data they filter, for people (the admin): lists, members,
recent joins and leaves, the names tracked so far and their most common values.

Nothing here writes. Functions that page return a ``Select`` for the caller to page
(keyset on the customer or change id).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from ..models import (
    AttributeDefinition,
    Customer,
    Event,
    Membership,
    MembershipChange,
    Segment,
)
from .compiler import customers
from .fields import Field
from .history import local_day

#: Most values :func:`common_values` suggests.
SUGGESTIONS = 10


def all_segments(session: Session) -> list[Segment]:
    """Every segment, the default one first, then by name."""
    return list(session.scalars(select(Segment).order_by(Segment.is_default.desc(), Segment.name)))


@dataclass
class Totals:
    """The size of the data: customers, events since a moment, segments."""

    customers: int
    events: int
    segments: int


def totals(session: Session, events_since: datetime) -> Totals:
    """How many customers and segments there are, and events since ``events_since``."""
    return Totals(
        session.scalar(select(func.count()).select_from(Customer)) or 0,
        session.scalar(select(func.count()).where(Event.occurred_at >= events_since)) or 0,
        session.scalar(select(func.count()).select_from(Segment)) or 0,
    )


def names(session: Session) -> dict[str, Any]:
    """What the builder suggests: attribute names with their recorded types, event names,
    event property names (per event) with types, and the segments."""
    attributes: dict[str, str] = {}
    events: list[str] = []
    properties: dict[str, dict[str, str]] = {}
    for kind, scope, name, type_ in session.execute(
        select(
            AttributeDefinition.kind,
            AttributeDefinition.scope,
            AttributeDefinition.name,
            AttributeDefinition.type,
        ).order_by(AttributeDefinition.name)
    ):
        if kind == "attribute":
            attributes[name] = type_
        elif kind == "event":
            events.append(name)
        elif kind == "property":
            properties.setdefault(scope, {})[name] = type_
    return {
        "attributes": attributes,
        "events": events,
        "properties": properties,
        "segments": [{"id": s.id, "slug": s.slug, "name": s.name} for s in all_segments(session)],
    }


def members(segment_id: int) -> Select[Customer]:
    """The segment's customers (page it by ``Customer.id``)."""
    inside = select(Membership.customer_id).where(Membership.segment_id == segment_id)
    return select(Customer).where(Customer.id.in_(inside))


def first_member(session: Session, segment_id: int) -> Customer | None:
    """The segment's member with the lowest id (whom previews are written for)."""
    return session.scalar(members(segment_id).order_by(Customer.id).limit(1))


def changes(segment_id: int) -> Select[MembershipChange, Customer]:
    """Joins and leaves of a segment with who they were (page by ``MembershipChange.id``)."""
    return (
        select(MembershipChange, Customer)
        .join(Customer, Customer.id == MembershipChange.customer_id)
        .where(MembershipChange.segment_id == segment_id)
    )


def _field(session: Session, attribute: str) -> Field:
    return Field(customers.c.attributes, attribute, session.get_bind().dialect.name)


def common_values(
    session: Session, attribute: str, limit: int = SUGGESTIONS
) -> list[tuple[Any, int]]:
    """The attribute's most common text and number values, with how many customers
    have each, most common first."""
    field = _field(session, attribute)
    found: list[tuple[Any, int]] = []
    for value in (field.text(), field.number()):
        n = func.count().label("n")
        found += [
            (v, count)
            for v, count in session.execute(
                select(value, n).where(value.is_not(None)).group_by(value).order_by(n.desc(), value)
                .limit(limit)
            )
        ]  # fmt: skip
    found.sort(key=lambda pair: -pair[1])
    return [(int(v) if isinstance(v, float) and v.is_integer() else v, n) for v, n in found[:limit]]


@dataclass
class ValueHint:
    """How many customers have exactly this text, and which values match it only in
    another letter case (``lagos`` when customers have ``Lagos``)."""

    exact: int
    other_case: list[tuple[str, int]]


def value_hint(session: Session, attribute: str, value: str) -> ValueHint:
    """Check a text value an admin typed against the data (for a warning)."""
    text = _field(session, attribute).text()
    rows = session.execute(
        select(text, func.count())
        .where(func.lower(text) == value.lower())
        .group_by(text)
        .limit(SUGGESTIONS + 1)
    ).all()
    exact = sum(n for v, n in rows if v == value)
    return ValueHint(exact, [(v, n) for v, n in rows if v != value])


def rebuilt_before(segment: Segment) -> date:
    """Days of the segment's history before this one are rebuilt from the data as it
    stands now: the segment (with these filters) did not exist yet."""
    moment: datetime = max(segment.created_at, segment.updated_at or segment.created_at)
    return local_day(moment)
