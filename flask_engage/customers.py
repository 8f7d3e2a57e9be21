"""A customer's lifecycle: looking one up, keeping one whose host row is gone, erasing one.

* :func:`get_customer` reads and writes nothing.
* :func:`keep` (``track_model(on_delete="keep")``): the host deleted the row behind
  a customer. The history stays; the customer leaves every segment (``All`` too),
  its live automation runs are cancelled and its queued messages skipped, and it
  joins nothing until identified again (any identify clears ``deleted_at``).
* :func:`forget` (``engage.forget``, ``on_delete="forget"``): the customer is
  erased with its events, memberships, unsubscriptions, runs and push
  subscriptions. Its messages stay for the counts of broadcasts and automations,
  without customer, subject, body or error.
* :func:`search`, :func:`find_customers` and the profile reads (segments, events,
  subscriptions) find customers as people look for them: by email, name or id.

Both write in the given session's transaction (the host's, or an operation's).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    Text,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from .channels import opt_out_channels
from .models import (
    LIVE_RUNS,
    AutomationRun,
    ChangeKind,
    Customer,
    CustomerAlias,
    Event,
    Membership,
    MembershipChange,
    Message,
    MessageStatus,
    OutboxItem,
    OutboxTask,
    PushSubscription,
    RunStatus,
    Segment,
    Unsubscription,
    utcnow,
)
from .segments.membership import apply_computation
from .tracking import check_customer_id

#: ``Message.error`` of a queued message whose customer was forgotten or deleted.
FORGOTTEN = "forgotten"
DELETED = "deleted"


@dataclass
class Erasure:
    """What erasing customers removes (or, before it, would remove)."""

    customers: int = 0
    events: int = 0
    memberships: int = 0
    subscriptions: int = 0
    runs: int = 0
    push_subscriptions: int = 0
    #: Messages kept for counts, stripped of customer, subject, body and error.
    messages: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def get_customer(session: Session, customer_id: int | str) -> Customer | None:
    """The customer with this host id (its ``deleted_at`` says if the host row is gone)."""
    external_id = check_customer_id(customer_id)
    return session.scalar(select(Customer).where(Customer.external_id == external_id))


def _ids(conn: Connection, external_ids: Iterable[str], *extra: Any) -> list[int]:
    keys = list(dict.fromkeys(external_ids))
    if not keys:
        return []
    query = select(Customer.id).where(Customer.external_id.in_(keys), *extra)
    return list(conn.scalars(query.order_by(Customer.id)))


def _count(conn: Connection, table: Any, ids: Sequence[int]) -> int:
    return conn.scalar(select(func.count()).where(table.customer_id.in_(ids))) or 0


def erasure_preview(session: Session, customer_id: int | str) -> Erasure | None:
    """What :func:`forget` would erase for one customer; None when it is unknown."""
    conn = session.connection()
    ids = _ids(conn, [check_customer_id(customer_id)])
    if not ids:
        return None
    return Erasure(
        customers=1,
        events=_count(conn, Event, ids),
        memberships=_count(conn, Membership, ids),
        subscriptions=_count(conn, Unsubscription, ids),
        runs=_count(conn, AutomationRun, ids),
        push_subscriptions=_count(conn, PushSubscription, ids),
        messages=_count(conn, Message, ids),
    )


def _leave_segment_counts(conn: Connection, ids: Sequence[int]) -> None:
    """Lower ``member_count`` of the segments these customers are about to leave."""
    deltas = conn.execute(
        select(Membership.segment_id, func.count())
        .where(Membership.customer_id.in_(ids))
        .group_by(Membership.segment_id)
        .order_by(Membership.segment_id)  # the same lock order as evaluation
    ).all()
    if deltas:
        table = Segment.__table__
        conn.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(
                member_count=table.c.member_count - bindparam("delta"),
                updated_at=table.c.updated_at,  # counts are not an edit of the segment
            ),
            [{"b_id": segment_id, "delta": delta} for segment_id, delta in deltas],
        )


def forget(session: Session, external_ids: Iterable[str]) -> Erasure:
    """Erase customers (by host id) in ``session``'s transaction; unknown ids are skipped."""
    conn = session.connection()
    ids = _ids(conn, external_ids)
    erased = Erasure()
    if not ids:
        return erased
    _leave_segment_counts(conn, ids)
    anonymous = conn.execute(
        update(Message)
        .where(Message.customer_id.in_(ids))
        .values(
            status=case(
                (Message.status == MessageStatus.QUEUED, MessageStatus.SKIPPED.value),
                else_=Message.status,
            ),
            error=case(
                (Message.status == MessageStatus.QUEUED, FORGOTTEN),
                (Message.status == MessageStatus.SKIPPED, Message.error),
                else_=None,
            ),
            customer_id=None,
            subject=None,
            body=None,
            run_id=None,
            claim=None,
            claimed_at=None,
        )
    )
    erased.messages = anonymous.rowcount
    erased.customers = len(ids)
    for name, table in (
        ("runs", AutomationRun),
        ("memberships", Membership),
        (None, MembershipChange),
        (None, CustomerAlias),  # the host ids merged into this customer
        ("subscriptions", Unsubscription),
        ("push_subscriptions", PushSubscription),
        ("events", Event),
    ):
        removed = conn.execute(delete(table).where(table.customer_id.in_(ids))).rowcount
        if name:
            setattr(erased, name, removed)
    conn.execute(
        delete(OutboxItem).where(
            OutboxItem.task == OutboxTask.EVALUATE, OutboxItem.key.in_([str(i) for i in ids])
        )
    )
    conn.execute(delete(Customer).where(Customer.id.in_(ids)))
    return erased


def keep(session: Session, external_ids: Iterable[str], now: datetime | None = None) -> int:
    """Take customers whose host row was deleted out of every segment and send, keeping
    their history; returns how many were still active."""
    now = now or utcnow()
    conn = session.connection()
    ids = _ids(conn, external_ids, Customer.deleted_at.is_(None))
    if not ids:
        return 0
    conn.execute(
        update(Customer).where(Customer.id.in_(ids)).values(deleted_at=now, updated_at=now)
    )
    _leave_segment_counts(conn, ids)
    computation = uuid.uuid4().hex
    changes = MembershipChange.__table__
    memberships = Membership.__table__
    conn.execute(
        insert(changes).from_select(
            ["segment_id", "customer_id", "kind", "at", "computation"],
            select(
                memberships.c.segment_id,
                memberships.c.customer_id,
                literal(ChangeKind.LEFT.value),
                literal(now, changes.c.at.type),
                literal(computation),
            ).where(memberships.c.customer_id.in_(ids)),
        )
    )
    apply_computation(session, computation)  # history without automations: nobody is sent to
    conn.execute(
        update(AutomationRun)
        .where(AutomationRun.customer_id.in_(ids), AutomationRun.status.in_(LIVE_RUNS))
        .values(status=RunStatus.CANCELLED, updated_at=now)
    )
    conn.execute(
        update(Message)
        .where(Message.customer_id.in_(ids), Message.status == MessageStatus.QUEUED)
        .values(status=MessageStatus.SKIPPED, error=DELETED)
    )
    return len(ids)


# -- finding customers (reads) ---------------------------------------------------------

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
