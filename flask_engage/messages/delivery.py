"""Delivery of queued messages, batch by batch, at most once per message (but one).

A batch is *claimed* (``claim``/``claimed_at`` set in one committed UPDATE, with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL), then each message is rendered, sent
and its status committed before the next one. A worker killed mid-batch leaves
its claimed messages queued; they are claimed again once the lease
(``ENGAGE_SEND_LEASE`` seconds) expires. Only the message in flight at the
moment of the crash can be delivered twice.

Opt-outs are checked again when a batch is claimed, so a customer who
unsubscribes while a broadcast is being sent gets nothing more from it.

A failure that may pass (the channel raises ``RetryLater``: an SMTP server down)
leaves the message queued with ``retry_at`` set, tried again with backoff, and
failed after :data:`MAX_ATTEMPTS`. Any other failure fails that message alone.
What the channel reports about an attempt (``Outgoing.receipt``: a webhook's
status code and latency) is stored on the message as ``receipt``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from flask import current_app
from sqlalchemy import Connection, CursorResult, func, or_, select, update
from sqlalchemy.orm import Session

from .. import signals
from ..automations.steps import program_of
from ..channels import (
    Channel,
    DeliveryFailed,
    Outgoing,
    RetryLater,
    SkipMessage,
    get_channel,
)
from ..db import get_state, log
from ..models import Automation, Broadcast, Message, MessageStatus, Unsubscription, utcnow
from .broadcasts import finish_broadcasts
from .compose import compose


@dataclass(frozen=True)
class Source:
    """What a message is made from: its templates, and whether opt-outs are ignored."""

    subject: str | None
    body: str
    ignore_opt_out: bool = False
    #: The channel's own settings (beyond subject and body).
    options: Mapping[str, Any] = field(default_factory=dict)


#: Delivery attempts (for failures that may pass) before a message is failed.
MAX_ATTEMPTS = 5


def retry_delay(attempts: int) -> timedelta:
    """Backoff before attempt ``attempts + 1``: 1, 4, 16, 64 minutes."""
    return timedelta(minutes=4 ** max(attempts - 1, 0))


def claim_batch(
    limit: int, broadcast_id: int | None = None, due: datetime | None = None
) -> str | None:
    """Claim up to ``limit`` queued messages; returns the claim token (None if none).

    ``due`` is the moment retries are due by (default: now).
    """
    now = utcnow()
    due = due or now
    lease = timedelta(seconds=current_app.config["ENGAGE_SEND_LEASE"])
    session = Session(bind=get_state().db.engine)
    try:
        free = or_(Message.claimed_at.is_(None), Message.claimed_at < now - lease) & or_(
            Message.retry_at.is_(None), Message.retry_at <= due
        )
        query = (
            select(Message.id)
            .where(Message.status == MessageStatus.QUEUED, free)
            .order_by(Message.id)
            .limit(limit)
        )
        if broadcast_id is not None:
            query = query.where(Message.broadcast_id == broadcast_id)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = list(session.scalars(query))
        if not ids:
            return None
        token = uuid.uuid4().hex
        session.execute(
            update(Message)
            .where(Message.id.in_(ids), Message.status == MessageStatus.QUEUED, free)
            .values(claim=token, claimed_at=now)
        )
        session.commit()
        return token
    finally:
        session.close()


def _source(session: Session, message: Message, cache: dict[Any, Source | None]) -> Source:
    if message.broadcast_id is not None:
        key: tuple[Any, ...] = ("b", message.broadcast_id)
        if key not in cache:
            broadcast = session.get(Broadcast, message.broadcast_id)
            cache[key] = (
                Source(
                    broadcast.subject,
                    broadcast.body,
                    broadcast.send_to_unsubscribed,
                    options=broadcast.options or {},
                )
                if broadcast
                else None
            )
    else:
        key = ("a", message.automation_id, message.step)
        if key not in cache:
            automation = (
                session.get(Automation, message.automation_id) if message.automation_id else None
            )
            spec = None
            if automation is not None and message.step is not None:
                program = program_of(automation)
                if message.step < len(program):
                    spec = program[message.step].get("send")
            cache[key] = (
                Source(
                    spec.get("subject"),
                    spec["body"],
                    options={k: v for k, v in spec.items() if k not in _COMMON},
                )
                if spec
                else None
            )
    source = cache[key]
    if source is None:
        raise SkipMessage("source_deleted")
    return source


def _over_cap(session: Session, message: Message, now: datetime) -> bool:
    caps = current_app.config.get("ENGAGE_FREQUENCY_CAP") or {}
    cap = caps.get(message.channel)
    if not cap:
        return False
    limit, seconds = cap
    sent = session.scalar(
        select(func.count()).where(
            Message.customer_id == message.customer_id,
            Message.channel == message.channel,
            Message.status == MessageStatus.SENT,
            Message.sent_at >= now - timedelta(seconds=seconds),
        )
    )
    return (sent or 0) >= limit


_COMMON = ("channel", "subject", "body")


class _Connections:
    """Each channel's batch connection, opened when its first message comes.

    A connection that cannot be opened is not tried again in the same batch: the
    channel's other messages are retried later at once.
    """

    def __init__(self, stack: ExitStack) -> None:
        self.stack = stack
        self.open: dict[str, Any] = {}
        self.down: dict[str, RetryLater] = {}

    def get(self, channel: Channel) -> Any:
        if channel.name in self.down:
            raise self.down[channel.name]
        if channel.name not in self.open:
            try:
                self.open[channel.name] = self.stack.enter_context(channel.connect())
            except RetryLater as exc:
                self.down[channel.name] = exc
                raise
        return self.open[channel.name]


def _deliver(
    session: Session,
    message: Message,
    source: Source,
    connections: _Connections,
    opted_out: bool,
    receipt: dict[str, Any],
) -> None:
    """Render and send one message; raises SkipMessage or any delivery error.

    The channel reports on the attempt in ``receipt`` (also when it raises).
    """
    if opted_out and not source.ignore_opt_out:
        raise SkipMessage("unsubscribed")
    customer = message.customer
    if customer is None or customer.deleted_at is not None:
        raise SkipMessage("deleted")  # forgotten, or its host row deleted (on_delete="keep")
    channel = get_channel(message.channel)
    composed = compose(customer, channel, source.subject, source.body, message_id=message.id)
    rendered = composed.rendered
    message.subject, message.body = rendered.subject, rendered.html or rendered.text
    outgoing = Outgoing(
        session=session,
        message=message,
        customer=customer,
        rendered=rendered,
        unsubscribe_url=composed.unsubscribe_url,
        report_url=composed.report_url,
        context=composed.context,
        options=source.options,
        receipt=receipt,
    )
    channel.send(outgoing, connections.get(channel))


@contextmanager
def _async_commits(connection: Connection) -> Iterator[None]:
    """Commits on this connection do not wait for the disk, until the block ends.

    The status write is all that stands between a send and a resend, so it is
    committed per message: a killed worker loses nothing committed this way (only
    a crash of the machine could), and a commit costs no fsync.
    """
    if connection.dialect.name == "postgresql":
        on, off = "SET synchronous_commit TO OFF", "RESET synchronous_commit"
    elif connection.dialect.name == "sqlite":
        previous = connection.exec_driver_sql("PRAGMA synchronous").scalar()
        on, off = "PRAGMA synchronous = OFF", f"PRAGMA synchronous = {int(previous or 0)}"
    else:
        yield
        return
    connection.exec_driver_sql(on)
    connection.commit()
    try:
        yield
    finally:
        connection.rollback()
        connection.exec_driver_sql(off)
        connection.commit()


def deliver_batch(
    *, limit: int = 500, broadcast_id: int | None = None, now: datetime | None = None
) -> int:
    """Claim and deliver one batch; returns how many messages were processed.

    ``now`` is the moment retries are due by (``run_due(now)`` moves it forward).
    """
    token = claim_batch(limit, broadcast_id, now)
    if token is None:
        return 0
    # One connection for the whole batch, with commits that do not wait for the disk.
    with get_state().db.engine.connect() as db_connection, _async_commits(db_connection):
        session = Session(bind=db_connection, expire_on_commit=False)
        try:
            return _deliver_claimed(session, token, now)
        finally:
            session.close()


def _deliver_claimed(session: Session, token: str, due: datetime | None = None) -> int:
    """Deliver the messages of one claim, committing each status as it is known.

    A message to retry is due again after a backoff from ``due`` (default: now).
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    processed = 0
    touched: set[int] = set()
    cache: dict[Any, Source | None] = {}
    messages = list(
        session.scalars(select(Message).where(Message.claim == token).order_by(Message.id))
    )
    opted_out = {
        (customer_id, channel)
        for customer_id, channel in session.execute(
            select(Unsubscription.customer_id, Unsubscription.channel).where(
                Unsubscription.customer_id.in_({m.customer_id for m in messages})
            )
        )
    }
    session.commit()
    session.expunge_all()  # statuses are written with guarded UPDATEs below
    with ExitStack() as stack:
        connections = _Connections(stack)
        for message in messages:
            now = utcnow()
            status, error, retry_at = MessageStatus.SENT, None, None
            attempts = message.attempts or 0
            receipt: dict[str, Any] = {}
            try:
                if _over_cap(session, message, now):
                    raise SkipMessage("frequency_cap")
                source = _source(session, message, cache)
                blocked = (message.customer_id, message.channel) in opted_out
                _deliver(session, message, source, connections, blocked, receipt)
            except SkipMessage as skip:
                status, error = MessageStatus.SKIPPED, str(skip)
            except RetryLater as exc:
                attempts += 1
                if attempts >= MAX_ATTEMPTS:
                    status, error = (
                        MessageStatus.FAILED,
                        f"gave up after {attempts} attempts: {exc}",
                    )
                else:
                    status, error = MessageStatus.QUEUED, str(exc)
                    retry_at = max(now, due or now) + retry_delay(attempts)
                log.warning("flask-engage: message %s not delivered: %s", message.id, exc)
            except DeliveryFailed as exc:
                status, error = MessageStatus.FAILED, str(exc)
                log.warning("flask-engage: message %s failed: %s", message.id, error)
            except Exception as exc:  # one bad message must not stop the batch
                status, error = MessageStatus.FAILED, f"{type(exc).__name__}: {exc}"[:2000]
                log.warning("flask-engage: message %s failed: %s", message.id, error)
            message.status, message.error = status, error
            message.sent_at = now if status == MessageStatus.SENT else None
            message.receipt = receipt or None
            result = session.execute(
                update(Message)
                .where(
                    Message.id == message.id,
                    Message.claim == token,
                    Message.status == MessageStatus.QUEUED,
                )
                .values(
                    status=status,
                    error=error[:2000] if error else None,
                    sent_at=message.sent_at,
                    subject=message.subject,
                    body=message.body,
                    claim=None,
                    claimed_at=None,
                    attempts=attempts,
                    retry_at=retry_at,
                    receipt=message.receipt,
                )
            )
            written = cast(CursorResult[Any], result).rowcount
            session.commit()
            processed += 1
            if message.broadcast_id is not None:
                touched.add(message.broadcast_id)
            if not written:  # cancelled, or re-claimed after the lease ran out
                continue
            if status == MessageStatus.SENT:
                signals.message_sent.send(app, message=message, customer=message.customer)
            elif status == MessageStatus.FAILED:
                signals.message_failed.send(
                    app, message=message, customer=message.customer, error=error
                )
    finish_broadcasts(session, sorted(touched), utcnow())
    session.commit()
    return processed
