"""Customers as people look for them: by email, name or id; a customer's segments,
events and subscriptions. Reads only.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, Text, cast, func, or_, select
from sqlalchemy.orm import Session

from .channels import opt_out_channels
from .models import Customer, Event, Membership, Segment, Unsubscription

#: Most customers :func:`find_customers` returns.
MATCHES = 10
#: Attributes that hold a person's name, in the order they are tried.
NAME_ATTRIBUTES = ("name", "first_name", "last_name", "full_name")


def _name_matches(text: str) -> Any:
    """SQL: one of the customer's name attributes starts with ``text`` (any case)."""
    needle = text.lower()
    return or_(
        *(
            func.lower(Customer.attributes[key].as_string()).startswith(needle, autoescape=True)
            for key in NAME_ATTRIBUTES
        )
    )


def search(q: str, segment_id: int | None = None) -> Select[Customer]:
    """Customers whose id is ``q``, whose email starts with it, whose name starts with it
    or whose attributes contain it (any case); optionally only members of a segment.
    Page it by ``Customer.id``."""
    query = select(Customer)
    if segment_id is not None:
        inside = select(Membership.customer_id).where(Membership.segment_id == segment_id)
        query = query.where(Customer.id.in_(inside))
    if q:
        needle = q.lower()
        query = query.where(
            or_(
                Customer.external_id == q,
                func.lower(Customer.email).startswith(needle, autoescape=True),
                _name_matches(q),
                func.lower(cast(Customer.attributes, Text)).contains(needle, autoescape=True),
            )
        )
    return query


def find_customers(session: Session, text: str, limit: int = MATCHES) -> list[Customer]:
    """The customers someone means by ``text``: the one with that id, then those with
    that email (any case), then those whose email or name starts with it."""
    text = text.strip()
    if not text:
        return []
    exact = session.scalar(select(Customer).where(Customer.external_id == text))
    found = [exact] if exact is not None else []
    lowered = text.lower()
    rest = session.scalars(
        select(Customer)
        .where(
            or_(
                func.lower(Customer.email) == lowered,
                func.lower(Customer.email).startswith(lowered, autoescape=True),
                _name_matches(text),
            )
        )
        .order_by((func.lower(Customer.email) == lowered).desc(), Customer.id)
        .limit(limit)
    )
    found += [c for c in rest if exact is None or c.id != exact.id]
    return found[:limit]


def find_customer(session: Session, text: str) -> Customer | None:
    """The one customer ``text`` (an id, an email or a name) means best, or None."""
    found = find_customers(session, text, 1)
    return found[0] if found else None


def count_customers(session: Session) -> int:
    """How many customers there are."""
    return session.scalar(select(func.count()).select_from(Customer)) or 0


def customer_events(customer_id: int) -> Select[Event]:
    """A customer's events (page by ``Event.id``)."""
    return select(Event).where(Event.customer_id == customer_id)


def customer_segments(session: Session, customer_id: int) -> list[Segment]:
    """The segments a customer is in, by name."""
    return list(
        session.scalars(
            select(Segment)
            .join(Membership, Membership.segment_id == Segment.id)
            .where(Membership.customer_id == customer_id)
            .order_by(Segment.name)
        )
    )


def subscriptions(session: Session, customer_id: int) -> dict[str, bool]:
    """For every channel customers can opt out of: is this customer subscribed?"""
    out = set(
        session.scalars(
            select(Unsubscription.channel).where(Unsubscription.customer_id == customer_id)
        )
    )
    return {channel: channel not in out for channel in opt_out_channels()}
