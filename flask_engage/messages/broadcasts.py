"""Broadcasts: draft -> scheduled -> queued -> sending -> sent (or cancelled).

When sending starts, recipients are snapshotted into one ``Message`` row per
customer (unique per broadcast, so a resumed snapshot adds nobody twice),
deduplicated across segments and lists (see :mod:`.audience`); customers who
cannot or do not want to receive the channel get a ``skipped`` row saying why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, String, case, exists, func, literal, not_, select, update
from sqlalchemy.orm import Session

from ..channels import Channel, get_channel
from ..db import insert_ignoring_conflicts
from ..errors import NotFound, StateError, ValidationError
from ..lists.service import find_list, list_names
from ..models import (
    Broadcast,
    BroadcastStatus,
    Customer,
    CustomerList,
    Message,
    MessageStatus,
    OutboxTask,
    Segment,
    utcnow,
)
from ..outbox import add_to_outbox
from ..segments.service import find_segment
from .audience import blocked, in_audience
from .outcomes import engagement_counts

#: Broadcasts that are over.
FINAL = (
    BroadcastStatus.SENT,
    BroadcastStatus.PARTIAL,
    BroadcastStatus.FAILED,
    BroadcastStatus.CANCELLED,
)


def create_broadcast(
    session: Session,
    name: str,
    *,
    channel: str,
    segments: Sequence[Any] = (),
    lists: Sequence[Any] = (),
    subject: str | None,
    body: str,
    send_to_unsubscribed: bool = False,
    scheduled_at: datetime | None = None,
    options: Mapping[str, Any] | None = None,
) -> Broadcast:
    """Validate and insert a draft broadcast to ``segments`` and ``lists`` (at least one).

    ``options`` are the channel's own settings (a webhook's ``url``...), checked by
    the channel; errors name them as the channel does (``url: ...``).
    """
    broadcast = Broadcast(
        **_checked(
            session,
            name=name,
            channel=channel,
            segments=segments,
            lists=lists,
            subject=subject,
            body=body,
            send_to_unsubscribed=send_to_unsubscribed,
            scheduled_at=scheduled_at,
            options=options,
        ),
        status=BroadcastStatus.DRAFT,
    )
    session.add(broadcast)
    session.flush()
    return broadcast


def update_broadcast(session: Session, broadcast_id: int, **fields: Any) -> Broadcast:
    """Change a draft or scheduled broadcast; every field is checked as at creation.

    A scheduled broadcast stays scheduled (at its new time); one that started
    sending meanwhile is not changed (StateError).
    """
    # Locked (PostgreSQL) so that the schedule cannot queue it while it changes.
    broadcast = session.get(Broadcast, broadcast_id, with_for_update=True)
    if broadcast is None:
        raise NotFound(f"broadcast: no broadcast {broadcast_id!r}")
    if broadcast.status not in (BroadcastStatus.DRAFT, BroadcastStatus.SCHEDULED):
        raise StateError(
            f"broadcast {broadcast.name!r} is {broadcast.status}: only drafts and scheduled"
            " broadcasts can be changed"
        )
    unknown = set(fields) - set(_FIELDS)
    if unknown:
        field = sorted(unknown)[0]
        raise ValidationError(f"{field}: not a field of a broadcast", field=field)
    current = {
        "name": broadcast.name,
        "channel": broadcast.channel,
        "segments": list(broadcast.segment_ids or []),
        "lists": list(broadcast.list_ids or []),
        "subject": broadcast.subject,
        "body": broadcast.body,
        "send_to_unsubscribed": broadcast.send_to_unsubscribed,
        "scheduled_at": broadcast.scheduled_at,
        "options": broadcast.options,
    }
    checked = _checked(session, **{**current, **fields})
    if broadcast.status == BroadcastStatus.SCHEDULED and checked["scheduled_at"] is None:
        raise ValidationError(
            "scheduled_at: a scheduled broadcast needs a time (cancel it to stop it)",
            field="scheduled_at",
        )
    for key, value in checked.items():
        setattr(broadcast, key, value)
    session.flush()
    return broadcast


_FIELDS = (
    "name",
    "channel",
    "segments",
    "lists",
    "subject",
    "body",
    "send_to_unsubscribed",
    "scheduled_at",
    "options",
)


def _checked(
    session: Session,
    *,
    name: Any,
    channel: Any,
    segments: Sequence[Any],
    lists: Sequence[Any],
    subject: Any,
    body: Any,
    send_to_unsubscribed: bool,
    scheduled_at: Any,
    options: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """A broadcast's fields, validated, as the model stores them."""
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("name: a broadcast needs a name", field="name")
    kind = get_channel(channel)
    if not segments and not lists:
        raise ValidationError("segments: choose at least one segment or list", field="segments")
    segment_ids = []
    for index, ref in enumerate(segments):
        found = find_segment(session, ref)
        if found is None:
            raise ValidationError(
                f"segments[{index}]: no segment {ref!r}", field=f"segments[{index}]"
            )
        segment_ids.append(found.id)
    list_ids = []
    for index, ref in enumerate(lists):
        listed = find_list(session, ref)
        if listed is None:
            raise ValidationError(f"lists[{index}]: no list {ref!r}", field=f"lists[{index}]")
        if listed.archived_at is not None:
            raise archived_list(listed, f"lists[{index}]")
        list_ids.append(listed.id)
    settings = _check_option_names(kind, options)
    checked = kind.check({**settings, "subject": subject, "body": body}, noun="broadcast")
    if scheduled_at is not None and (
        not isinstance(scheduled_at, datetime) or scheduled_at.tzinfo is None
    ):
        raise ValidationError(
            "scheduled_at: expected a timezone-aware datetime", field="scheduled_at"
        )
    return {
        "name": name.strip(),
        "channel": channel,
        "segment_ids": list(dict.fromkeys(segment_ids)),
        "list_ids": list(dict.fromkeys(list_ids)),
        "subject": subject,
        "body": body,
        "send_to_unsubscribed": bool(send_to_unsubscribed),
        "options": {key: checked[key] for key in kind.options if key in checked} or None,
        "scheduled_at": scheduled_at,
    }


def _check_option_names(channel: Channel, options: Any) -> dict[str, Any]:
    """``options`` as a dict holding only settings the channel takes."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ValidationError("options: expected an object of channel settings", field="options")
    for name in options:
        if name not in channel.options:
            known = ", ".join(channel.options) or "none"
            raise ValidationError(
                f"options.{name}: not a setting of {channel.name} broadcasts (settings: {known})",
                field=f"options.{name}",
            )
    return dict(options)


def _get(session: Session, broadcast_id: int) -> Broadcast:
    broadcast = session.get(Broadcast, broadcast_id)
    if broadcast is None:
        raise NotFound(f"broadcast: no broadcast {broadcast_id!r}")
    return broadcast


def request_send(session: Session, broadcast_id: int, now: datetime) -> Broadcast:
    """Schedule (future ``scheduled_at``) or queue a draft; anything else: no-op."""
    broadcast = _get(session, broadcast_id)
    if broadcast.status != BroadcastStatus.DRAFT:
        return broadcast
    if broadcast.scheduled_at is not None and broadcast.scheduled_at > now:
        broadcast.status = BroadcastStatus.SCHEDULED
    else:
        queue_broadcast(session, broadcast.id, now)
    session.flush()
    return broadcast


def queue_broadcast(session: Session, broadcast_id: int, now: datetime) -> None:
    """Draft or scheduled -> queued, with an outbox row for the worker (same transaction)."""
    result = session.execute(
        update(Broadcast)
        .where(
            Broadcast.id == broadcast_id,
            Broadcast.status.in_((BroadcastStatus.DRAFT, BroadcastStatus.SCHEDULED)),
        )
        .values(status=BroadcastStatus.QUEUED)
        .execution_options(synchronize_session="fetch")
    )
    if cast(CursorResult[Any], result).rowcount:
        add_to_outbox(session, OutboxTask.BROADCAST, [broadcast_id])


def due_broadcasts(session: Session, now: datetime) -> list[int]:
    """Scheduled broadcasts whose time has come."""
    return list(
        session.scalars(
            select(Broadcast.id).where(
                Broadcast.status == BroadcastStatus.SCHEDULED, Broadcast.scheduled_at <= now
            )
        )
    )


def start_broadcast(session: Session, broadcast_id: int, now: datetime | None = None) -> int:
    """Snapshot recipients (queued -> sending); returns messages queued. Idempotent."""
    now = now or utcnow()
    broadcast = session.get(Broadcast, broadcast_id)
    if broadcast is None or broadcast.status != BroadcastStatus.QUEUED:
        return 0
    customers = Customer.__table__
    channel = broadcast.channel
    reachable = get_channel(channel).reachable()
    skip = blocked(channel, broadcast.send_to_unsubscribed)
    skipped, to_send = MessageStatus.SKIPPED.value, MessageStatus.QUEUED.value
    status = case((not_(reachable), skipped), (skip, skipped), else_=to_send)
    reason = case((not_(reachable), "no_address"), (skip, "unsubscribed"), else_=None)
    columns = ["customer_id", "channel", "status", "error", "broadcast_id", "created_at"]
    session.execute(
        insert_ignoring_conflicts(
            session, Message.__table__, ["broadcast_id", "customer_id"]
        ).from_select(
            columns,
            select(
                customers.c.id,
                literal(channel, String),
                status,
                reason,
                literal(broadcast.id),
                literal(now, Message.__table__.c.created_at.type),
            ).where(in_audience(broadcast.segment_ids or [], broadcast.list_ids or [])),
        )
    )
    broadcast.status = BroadcastStatus.SENDING
    broadcast.started_at = now
    session.flush()
    queued = (
        session.scalar(
            select(func.count()).where(
                Message.broadcast_id == broadcast.id, Message.status == MessageStatus.QUEUED
            )
        )
        or 0
    )
    if queued == 0:
        finish_broadcasts(session, [broadcast.id], now)
    return queued


def finish_broadcasts(session: Session, broadcast_ids: list[int], now: datetime) -> None:
    """Close sending broadcasts with nothing left queued: ``sent`` when every message
    was sent or skipped, ``failed`` when none was sent and some failed, else ``partial``."""
    if not broadcast_ids:
        return
    of_broadcast = Message.broadcast_id == Broadcast.id
    pending = exists().where(of_broadcast, Message.status == MessageStatus.QUEUED)
    failed = exists().where(of_broadcast, Message.status == MessageStatus.FAILED)
    sent = exists().where(of_broadcast, Message.status == MessageStatus.SENT)
    outcome = case(
        (~failed, BroadcastStatus.SENT.value),
        (~sent, BroadcastStatus.FAILED.value),
        else_=BroadcastStatus.PARTIAL.value,
    )
    session.execute(
        update(Broadcast)
        .where(
            Broadcast.id.in_(broadcast_ids),
            Broadcast.status == BroadcastStatus.SENDING,
            ~pending,
        )
        .values(status=outcome, finished_at=now)
        .execution_options(synchronize_session=False)
    )


def cancel(session: Session, broadcast_id: int) -> Broadcast:
    """Cancel a broadcast that has not finished; its queued messages are skipped."""
    broadcast = _get(session, broadcast_id)
    if broadcast.status in FINAL:
        raise StateError(f"broadcast {broadcast.name!r} is already {broadcast.status}")
    broadcast.status = BroadcastStatus.CANCELLED
    broadcast.finished_at = utcnow()
    session.execute(
        update(Message)
        .where(Message.broadcast_id == broadcast.id, Message.status == MessageStatus.QUEUED)
        .values(status=MessageStatus.SKIPPED, error="cancelled")
        .execution_options(synchronize_session=False)
    )
    session.flush()
    return broadcast


def archived_list(listed: CustomerList, field: str) -> ValidationError:
    """The error for an archived list in a broadcast's audience."""
    return ValidationError(
        f"{field}: list {listed.name!r} is archived: reopen it, or take it out of the audience",
        field=field,
    )


def counts(session: Session, broadcast_id: int) -> dict[str, int]:
    """Messages by status, skipped ones by reason (``unsubscribed``, ``no_address``...),
    and the customers who ``opened`` and ``clicked`` (see :mod:`.outcomes`)."""
    result = dict.fromkeys(
        ("total", "queued", "sent", "failed", "skipped", "unsubscribed", "no_address"), 0
    )
    for status, error, n in session.execute(
        # group by the plain columns: PostgreSQL does not match two CASE expressions
        # whose bind parameters differ, so a grouped CASE fails there
        select(Message.status, Message.error, func.count())
        .where(Message.broadcast_id == broadcast_id)
        .group_by(Message.status, Message.error)
    ):
        result[status] = result.get(status, 0) + n
        result["total"] += n
        if status == MessageStatus.SKIPPED and error:
            result[error] = result.get(error, 0) + n
    engaged = engagement_counts(session, broadcast_id)
    result.update(opened=engaged["opened"], clicked=engaged["clicked"])
    return result


def segment_names(session: Session, broadcast: Broadcast) -> list[str]:
    """Names of a broadcast's segments (for display)."""
    return list(
        session.scalars(select(Segment.name).where(Segment.id.in_(broadcast.segment_ids or [])))
    )


def broadcast_list_names(session: Session, broadcast: Broadcast) -> list[str]:
    """Names of a broadcast's lists (for display)."""
    return list_names(session, broadcast.list_ids or [])
