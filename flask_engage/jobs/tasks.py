"""Outbox tasks: what each kind of outbox row asks a job to do, in one registry.

A handler takes the session of the transaction that claimed the rows, the rows
(a :class:`Batch`: their keys, and for ``evaluate`` what changed) and ``now``; it
does the work in that transaction and says what it set off (membership
computations whose signals go out after commit, and whether automation steps or
sends may now be due).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..automations import start_event_runs, start_runs, wake_runs
from ..changes import Changes, union
from ..lists.optin import send_confirmations
from ..messages.broadcasts import start_broadcast
from ..models import Customer, Event, OutboxTask, Segment
from ..segments.membership import evaluate_customers


@dataclass
class Batch:
    """Claimed outbox rows of one task."""

    #: Each row's key (a customer, event, broadcast... id), as many times as claimed.
    keys: list[int] = field(default_factory=list)
    #: Beside each key, what its row says changed (``evaluate``); None: anything.
    changes: list[Changes | None] = field(default_factory=list)


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


Handler = Callable[[Session, Batch, datetime], Done]
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


def _by_change(batch: Batch) -> list[tuple[list[int], Changes | None]]:
    """The customers to evaluate for every segment (those a row says anything may
    have changed about), and the others with what changed about any of them."""
    unknown = {
        key for key, changes in zip(batch.keys, batch.changes, strict=True) if changes is None
    }
    known = [
        (key, changes)
        for key, changes in zip(batch.keys, batch.changes, strict=True)
        if key not in unknown
    ]
    groups: list[tuple[list[int], Changes | None]] = []
    if unknown:
        groups.append((sorted(unknown), None))
    if known:
        groups.append((sorted({key for key, _ in known}), union(c for _, c in known)))
    return groups


@task(OutboxTask.EVALUATE)
def evaluate(session: Session, batch: Batch, now: datetime) -> Done:
    """Re-evaluate customers against the segments that read what changed about them
    (every segment where that is unknown); start the automations it triggers."""
    _lock_customers(session, sorted(set(batch.keys)))
    done = Done()
    for ids, changes in _by_change(batch):
        computation = evaluate_customers(session, ids, now, changes).computation
        if computation is not None:
            start_runs(session, computation, now)
            done.add(Done([computation], triggered=True))
    return done


@task(OutboxTask.EVENT)
def react(session: Session, batch: Batch, now: datetime) -> Done:
    """Start the runs these events trigger, and wake the runs waiting for them."""
    ids = sorted(set(batch.keys))
    customers = select(Event.customer_id).where(Event.id.in_(ids)).distinct()
    _lock_customers(session, sorted(session.scalars(customers)))
    started = start_event_runs(session, ids, now)
    woken = wake_runs(session, ids, now)
    return Done(triggered=bool(started or woken))


@task(OutboxTask.BROADCAST)
def broadcast(session: Session, batch: Batch, now: datetime) -> Done:
    """Snapshot the recipients of queued broadcasts."""
    queued = sum(start_broadcast(session, broadcast_id, now) for broadcast_id in batch.keys)
    return Done(triggered=queued > 0)


@task(OutboxTask.DELIVER)
def deliver(session: Session, batch: Batch, now: datetime) -> Done:
    """Queued messages wait: say so, the caller sends them."""
    return Done(triggered=True)


@task(OutboxTask.CONFIRM_LIST)
def confirm_list(session: Session, batch: Batch, now: datetime) -> Done:
    """Email double opt-in confirmation links (retried while the mail server is down)."""
    send_confirmations(session, batch.keys, now)
    return Done()
