"""Merging two customers: one person known under two ids becomes one customer."""

from __future__ import annotations

from flask import current_app
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from . import signals
from .db import operation_session
from .errors import NotFound, ValidationError
from .models import (
    AutomationRun,
    Customer,
    CustomerAlias,
    Event,
    Membership,
    MembershipChange,
    Message,
    PushSubscription,
    Segment,
    Unsubscription,
    utcnow,
)
from .outbox import add_to_outbox
from .tracking import CustomerPatch, check_customer_id, write_customers


def merge_customers(source_id: int | str, destination_id: int | str) -> Customer:
    """Move the source's data onto the destination, delete the source; return the destination.

    Events, push subscriptions, unsubscriptions and messages move; attributes merge
    with the destination winning on conflict (its email too, when it has one). An
    unknown destination is created. The source's id is recorded as an alias of the
    destination, so unsubscribe links already sent to the source act on the
    destination. Commits by itself; the destination's segments are re-evaluated
    after the commit and ``customers_merged`` is sent.
    """
    source_ext = check_customer_id(source_id, "source")
    destination_ext = check_customer_id(destination_id, "destination")
    if source_ext == destination_ext:
        raise ValidationError(
            "destination: cannot merge a customer into itself", field="destination"
        )
    with operation_session() as session:
        source = _locked(session, source_ext)
        if source is None:
            raise NotFound(f"source: no customer {source_ext!r}")
        # merging brings no deleted destination back (only an identify does)
        write_customers(session.connection(), {destination_ext: CustomerPatch(restore=False)})
        destination = _locked(session, destination_ext)
        assert destination is not None
        _move(session, source, destination)
        add_to_outbox(session, "evaluate", [destination.id])
    with operation_session() as session:
        merged = session.get(Customer, destination.id)
        assert merged is not None
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    signals.customers_merged.send(app, source_id=source_ext, customer=merged)
    return merged


def _locked(session: Session, external_id: str) -> Customer | None:
    """The customer, row-locked on PostgreSQL so concurrent writes wait for the merge."""
    return session.scalar(
        select(Customer).where(Customer.external_id == external_id).with_for_update()
    )


def _move(session: Session, source: Customer, destination: Customer) -> None:
    src, dst = source.id, destination.id
    destination.attributes = {**(source.attributes or {}), **(destination.attributes or {})}
    destination.email = destination.email or source.email
    destination.created_at = min(source.created_at, destination.created_at)
    destination.updated_at = utcnow()
    session.execute(update(Event).where(Event.customer_id == src).values(customer_id=dst))
    session.execute(
        update(PushSubscription).where(PushSubscription.customer_id == src).values(customer_id=dst)
    )
    kept = select(Unsubscription.channel).where(Unsubscription.customer_id == dst)
    session.execute(
        update(Unsubscription)
        .where(Unsubscription.customer_id == src, Unsubscription.channel.not_in(kept))
        .values(customer_id=dst)
    )
    # A message of a run that goes away keeps its history, without the run.
    runs = select(AutomationRun.id).where(AutomationRun.customer_id == src)
    session.execute(update(Message).where(Message.run_id.in_(runs)).values(run_id=None))
    # One message per customer per broadcast: the destination's own copy wins.
    dst_broadcasts = select(Message.broadcast_id).where(
        Message.customer_id == dst, Message.broadcast_id.is_not(None)
    )
    session.execute(
        update(Message)
        .where(Message.customer_id == src)
        .where((Message.broadcast_id.is_(None)) | Message.broadcast_id.not_in(dst_broadcasts))
        .values(customer_id=dst)
    )
    session.execute(
        update(Segment)
        .where(Segment.id.in_(select(Membership.segment_id).where(Membership.customer_id == src)))
        .values(member_count=Segment.member_count - 1, updated_at=Segment.updated_at)
    )
    # Links made for the source (and for customers merged into it) now act on the destination.
    session.execute(
        update(CustomerAlias).where(CustomerAlias.customer_id == src).values(customer_id=dst)
    )
    session.execute(
        insert(CustomerAlias).values(
            external_id=source.external_id,
            source_id=src,
            source_created_at=source.created_at,
            customer_id=dst,
            merged_at=utcnow(),
        )
    )
    for table in (Message, AutomationRun, Membership, MembershipChange, Unsubscription):
        session.execute(delete(table).where(table.customer_id == src))
    session.execute(delete(Customer).where(Customer.id == src))
