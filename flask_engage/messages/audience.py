"""Who a broadcast reaches, decided in one place: the recipients' SQL, the estimate an
admin sees before sending, the sample whose templates are rendered before a send,
and the lists of messages sent.

A customer is a recipient once, however many of the broadcast's segments hold them;
a customer the channel cannot reach is skipped as ``no_address``, one who opted out
of the channel as ``unsubscribed`` (unless the broadcast is sent to unsubscribed
customers too). :func:`~flask_engage.messages.broadcasts.start_broadcast` writes
exactly what :func:`estimate` counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, case, exists, func, literal, not_, select
from sqlalchemy.orm import Session

from ..channels import Channel, get_channel
from ..errors import EngageError
from ..models import (
    Automation,
    Broadcast,
    Customer,
    Membership,
    Message,
    MessageStatus,
    Unsubscription,
)
from .compose import compose

customers = Customer.__table__

#: Recipients whose templates are rendered before a send.
SAMPLE = 25


def in_segments(segment_ids: Sequence[int]) -> ColumnElement[bool]:
    """SQL on ``engage_customers``: the customer is in one of the segments."""
    inside = select(Membership.customer_id).where(Membership.segment_id.in_(list(segment_ids)))
    return customers.c.id.in_(inside)


def opted_out(channel: str) -> ColumnElement[bool]:
    """SQL on ``engage_customers``: the customer unsubscribed from ``channel``."""
    return exists().where(
        Unsubscription.customer_id == customers.c.id, Unsubscription.channel == channel
    )


def blocked(channel: str, send_to_unsubscribed: bool) -> ColumnElement[bool]:
    """SQL: the send skips this customer because they opted out."""
    return literal(False) if send_to_unsubscribed else opted_out(channel)


@dataclass
class Estimate:
    """What a send would do now: customers in the segments (each once), those the
    channel cannot reach, those who opted out, and who would get the message."""

    customers: int
    no_address: int
    unsubscribed: int
    #: Unsubscribed customers are sent to as well (transactional messages).
    send_to_unsubscribed: bool

    @property
    def recipients(self) -> int:
        """Customers who would be sent the message."""
        skipped = self.no_address + (0 if self.send_to_unsubscribed else self.unsubscribed)
        return self.customers - skipped


def estimate(
    session: Session, segment_ids: Sequence[int], channel: str, send_to_unsubscribed: bool
) -> Estimate:
    """Count a broadcast's audience as sending would split it, without writing."""
    reachable = get_channel(channel).reachable()
    unreachable = func.coalesce(func.sum(case((not_(reachable), 1), else_=0)), 0)
    out = func.coalesce(func.sum(case((reachable & opted_out(channel), 1), else_=0)), 0)
    total, no_address, unsubscribed = session.execute(
        select(func.count(), unreachable, out)
        .select_from(customers)
        .where(in_segments(segment_ids))
    ).one()
    return Estimate(int(total), int(no_address), int(unsubscribed), bool(send_to_unsubscribed))


def broadcast_estimate(session: Session, broadcast: Broadcast) -> Estimate:
    """:func:`estimate` of a saved broadcast."""
    return estimate(
        session, broadcast.segment_ids or [], broadcast.channel, broadcast.send_to_unsubscribed
    )


def sample(
    session: Session,
    segment_ids: Sequence[int],
    channel: str,
    send_to_unsubscribed: bool,
    limit: int = SAMPLE,
    *,
    random: bool = True,
) -> list[Customer]:
    """Up to ``limit`` customers who would be sent the message, picked at random (or
    the first ones, by id)."""
    query = (
        select(Customer)
        .where(
            in_segments(segment_ids),
            get_channel(channel).reachable(),
            not_(blocked(channel, send_to_unsubscribed)),
        )
        .order_by(func.random() if random else Customer.id)
        .limit(limit)
    )
    return list(session.scalars(query))


@dataclass
class RenderFailure:
    """A recipient whose message cannot be rendered, and why."""

    customer: Customer
    error: str


def render_failures(
    channel: Channel, subject: str | None, body: str, recipients: Iterable[Customer]
) -> list[RenderFailure]:
    """Render the message for each recipient as delivery would; the ones that fail."""
    failures = []
    for customer in recipients:
        try:
            compose(customer, channel, subject, body)
        except EngageError as exc:
            failures.append(RenderFailure(customer, str(exc)))
    return failures


def check_broadcast(
    session: Session, broadcast: Broadcast, limit: int = SAMPLE
) -> tuple[int, list[RenderFailure]]:
    """Render a broadcast for a sample of its recipients: (rendered, failures)."""
    recipients = sample(
        session,
        broadcast.segment_ids or [],
        broadcast.channel,
        broadcast.send_to_unsubscribed,
        limit,
    )
    channel = get_channel(broadcast.channel)
    return len(recipients), render_failures(channel, broadcast.subject, broadcast.body, recipients)


def all_broadcasts() -> Select[Broadcast]:
    """Every broadcast (page by ``Broadcast.id``)."""
    return select(Broadcast)


def broadcast_messages(broadcast_id: int) -> Select[Message]:
    """A broadcast's messages (page by ``Message.id``); each loads its customer."""
    return select(Message).where(Message.broadcast_id == broadcast_id)


def customer_messages(customer_id: int) -> Select[Message, str, str]:
    """A customer's messages with the name of the broadcast or automation that sent
    each (page by ``Message.id``)."""
    return (
        select(Message, Broadcast.name, Automation.name)
        .outerjoin(Broadcast, Broadcast.id == Message.broadcast_id)
        .outerjoin(Automation, Automation.id == Message.automation_id)
        .where(Message.customer_id == customer_id)
    )


def sent_per_day(session: Session, since: datetime) -> dict[str, int]:
    """Messages sent per UTC day since ``since`` (``YYYY-MM-DD`` -> count)."""
    day = func.date(Message.sent_at)
    rows = session.execute(
        select(day, func.count())
        .where(Message.status == MessageStatus.SENT, Message.sent_at >= since)
        .group_by(day)
    )
    return {str(value)[:10]: n for value, n in rows}


def failure_reasons(session: Session, broadcast_id: int, limit: int = 5) -> list[tuple[str, int]]:
    """The most common errors of a broadcast's failed messages, with how many had each."""
    n = func.count().label("n")
    rows = session.execute(
        select(Message.error, n)
        .where(Message.broadcast_id == broadcast_id, Message.status == MessageStatus.FAILED)
        .group_by(Message.error)
        .order_by(n.desc())
        .limit(limit)
    )
    return [(error or "unknown error", count) for error, count in rows]
