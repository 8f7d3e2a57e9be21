"""Delivery of queued messages, batch by batch, exactly once per message.

A batch is *claimed* (``claim``/``claimed_at`` set in one committed UPDATE, with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL), then each message is rendered, sent
and its status committed before the next one. A worker killed mid-batch leaves
its claimed messages queued; they are claimed again once the lease
(``ENGAGE_SEND_LEASE`` seconds) expires. Only the message in flight at the
moment of the crash can be delivered twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from .. import signals
from ..context import get_state, log
from ..errors import EngageError
from ..models import Automation, Broadcast, Message, utcnow
from .broadcasts import finish_broadcasts
from .templates import Rendered, render
from .unsubscribe import make_token
from .urls import external_url


class SkipMessage(EngageError):
    """The message is not sent, for a reason that is not a failure (``error`` says why)."""


def claim_batch(limit: int, broadcast_id: int | None = None, now: datetime | None = None) -> str | None:
    """Claim up to ``limit`` queued messages; returns the claim token (None if none)."""
    now = now or utcnow()
    lease = timedelta(seconds=current_app.config["ENGAGE_SEND_LEASE"])
    session = Session(bind=get_state().db.engine)
    try:
        free = (Message.claimed_at.is_(None)) | (Message.claimed_at < now - lease)
        query = select(Message.id).where(Message.status == "queued", free).order_by(Message.id).limit(limit)
        if broadcast_id is not None:
            query = query.where(Message.broadcast_id == broadcast_id)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = list(session.scalars(query))
        if not ids:
            return None
        token = uuid.uuid4().hex
        session.execute(
            update(Message).where(Message.id.in_(ids), Message.status == "queued", free)
            .values(claim=token, claimed_at=now)
        )
        session.commit()
        return token
    finally:
        session.close()


def _templates(session: Session, message: Message, cache: dict[Any, Any]) -> tuple[str | None, str]:
    if message.broadcast_id is not None:
        key = ("b", message.broadcast_id)
        if key not in cache:
            broadcast = session.get(Broadcast, message.broadcast_id)
            cache[key] = (broadcast.subject, broadcast.body) if broadcast else None
    else:
        key = ("a", message.automation_id, message.step)
        if key not in cache:
            automation = session.get(Automation, message.automation_id) if message.automation_id else None
            spec = None
            if automation is not None and message.step is not None and message.step < len(automation.steps):
                spec = automation.steps[message.step].get("send")
            cache[key] = (spec.get("subject"), spec["body"]) if spec else None
    if cache[key] is None:
        raise SkipMessage("source_deleted")
    return cache[key]


def _over_cap(session: Session, message: Message, now: datetime) -> bool:
    caps = current_app.config.get("ENGAGE_FREQUENCY_CAP") or {}
    cap = caps.get(message.channel)
    if not cap:
        return False
    limit, seconds = cap
    sent = session.scalar(
        select(func.count()).where(
            Message.customer_id == message.customer_id, Message.channel == message.channel,
            Message.status == "sent", Message.sent_at >= now - timedelta(seconds=seconds),
        )
    ) or 0
    return sent >= limit


@contextmanager
def _email_connection(needed: bool) -> Iterator[Any]:
    if not needed:
        yield None
        return
    mail = current_app.extensions["mail"]
    with mail.connect() as connection:
        yield connection


def deliver_batch(*, limit: int = 500, broadcast_id: int | None = None) -> int:
    """Claim and deliver one batch; returns how many messages were processed."""
    from . import email, inapp, webpush

    token = claim_batch(limit, broadcast_id)
    if token is None:
        return 0
    app = current_app._get_current_object()
    session = Session(bind=get_state().db.engine, expire_on_commit=False)
    processed = 0
    touched: set[int] = set()
    cache: dict[Any, Any] = {}
    postgres = session.get_bind().dialect.name == "postgresql"
    try:
        messages = list(session.scalars(select(Message).where(Message.claim == token).order_by(Message.id)))
        session.commit()
        with _email_connection(any(m.channel == "email" for m in messages)) as connection:
            for message in messages:
                if postgres:
                    # The status write is the only thing between a send and a resend:
                    # keep it cheap (a worker crash loses nothing committed this way).
                    session.execute(text("SET LOCAL synchronous_commit TO OFF"))
                now = utcnow()
                customer = message.customer
                error: str | None = None
                status = "sent"
                try:
                    if _over_cap(session, message, now):
                        raise SkipMessage("frequency_cap")
                    subject, body = _templates(session, message, cache)
                    unsubscribe_url = external_url(
                        "engage.unsubscribe", token=make_token(customer.id, message.channel)
                    )
                    rendered: Rendered = render(
                        subject, body,
                        {"customer": customer.template_context(), "unsubscribe_url": unsubscribe_url},
                    )
                    message.subject, message.body = rendered.subject, rendered.html or rendered.text
                    if message.channel == "email":
                        email.send(connection, customer, rendered, unsubscribe_url)
                    elif message.channel == "push":
                        webpush.send(session, customer, rendered, message)
                    else:
                        inapp.send(customer, rendered)
                except SkipMessage as skip:
                    status, error = "skipped", str(skip)
                except Exception as exc:  # one bad message must not stop the batch
                    status, error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
                    log.warning("flask-engage: message %s failed: %s", message.id, error)
                message.status, message.error = status, error
                message.sent_at = now if status == "sent" else None
                message.claim = None
                session.commit()
                processed += 1
                if message.broadcast_id is not None:
                    touched.add(message.broadcast_id)
                if status == "sent":
                    signals.message_sent.send(app, message=message, customer=customer)
                elif status == "failed":
                    signals.message_failed.send(app, message=message, customer=customer, error=error)
        finish_broadcasts(session, sorted(touched), utcnow())
        session.commit()
    finally:
        session.close()
    return processed
