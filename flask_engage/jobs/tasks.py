"""Outbox tasks: what each kind of outbox row asks a job to do, in one registry.

A handler takes the session of the transaction that claimed the rows, their keys
and ``now``; it does the work in that transaction and says what it set off
(membership computations whose signals go out after commit, and whether
automation steps or sends may now be due).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..automations import start_event_runs, start_runs, wake_runs
from ..lists.optin import send_confirmations
from ..messages.broadcasts import start_broadcast
from ..models import Customer, Event, OutboxTask, Segment
from ..segments.membership import evaluate_customers


@dataclass
class Done:
    """What a batch of outbox work set off."""

    #: Membership computations, for signals once the transaction has committed.
    computations: list[str] = field(default_factory=list)
    #: Automation steps or sends may be due now.
    triggered: bool = False

    def add(self, other: Done) -> None:
        self.computations += other.computations
        self.triggered |= other.triggered


Handler = Callable[[Session, list[int], datetime], Done]
_registry: dict[str, Handler] = {}


def task(name: OutboxTask) -> Callable[[Handler], Handler]:
    """Register the handler of one outbox task."""

    def register(handler: Handler) -> Handler:
        _registry[name] = handler
        return handler

    return register


def handler_for(name: str) -> Handler | None:
    """The handler of a task name (None for a name no handler knows)."""
    return _registry.get(name)


def _lock_customers(session: Session, customer_ids: list[int]) -> None:
    """PostgreSQL: one worker at a time evaluates a customer, and none while a
    segment is being recomputed (which holds its row ``FOR UPDATE``)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    session.execute(
        select(Segment.id).order_by(Segment.id).with_for_update(read=True, key_share=True)
    )
    session.execute(
        select(Customer.id)
        .where(Customer.id.in_(customer_ids))
        .order_by(Customer.id)
        .with_for_update(key_share=True)
    )


@task(OutboxTask.EVALUATE)
def evaluate(session: Session, customer_ids: list[int], now: datetime) -> Done:
    """Re-evaluate customers against every segment; start the automations it triggers."""
    ids = sorted(set(customer_ids))
    _lock_customers(session, ids)
    computation = evaluate_customers(session, ids, now).computation
    if computation is None:
        return Done()
    start_runs(session, computation, now)
    return Done([computation], triggered=True)


@task(OutboxTask.EVENT)
def react(session: Session, event_ids: list[int], now: datetime) -> Done:
    """Start the runs these events trigger, and wake the runs waiting for them."""
    ids = sorted(set(event_ids))
    customers = select(Event.customer_id).where(Event.id.in_(ids)).distinct()
    _lock_customers(session, sorted(session.scalars(customers)))
    started = start_event_runs(session, ids, now)
    woken = wake_runs(session, ids, now)
    return Done(triggered=bool(started or woken))


@task(OutboxTask.BROADCAST)
def broadcast(session: Session, broadcast_ids: list[int], now: datetime) -> Done:
    """Snapshot the recipients of queued broadcasts."""
    queued = sum(start_broadcast(session, broadcast_id, now) for broadcast_id in broadcast_ids)
    return Done(triggered=queued > 0)


@task(OutboxTask.DELIVER)
def deliver(session: Session, keys: list[int], now: datetime) -> Done:
    """Queued messages wait: say so, the caller sends them."""
    return Done(triggered=True)


@task(OutboxTask.CONFIRM_LIST)
def confirm_list(session: Session, member_ids: list[int], now: datetime) -> Done:
    """Email double opt-in confirmation links (retried while the mail server is down)."""
    send_confirmations(session, member_ids, now)
    return Done()
