"""In-app inbox for the current identity."""

from __future__ import annotations

from typing import Any

from flask import current_app, jsonify, request
from sqlalchemy import func, select, update

from ..db import operation_session
from ..messages.templates import html_to_text, is_html
from ..models import Customer, Message, utcnow
from .common import ApiError, bp


def _customer_id() -> int | None:
    external = current_app.extensions["engage"].current_identity()
    if external is None:
        raise ApiError(401, "identity: no signed-in customer")
    with operation_session() as session:
        return session.scalar(select(Customer.id).where(Customer.external_id == external))


def _text(body: str | None) -> str:
    """The plain text of a body (widgets show this; ``body`` keeps the HTML)."""
    return html_to_text(body) if body and is_html(body) else body or ""


def _mine(customer_id: int | None) -> tuple[Any, ...]:
    """Conditions for the sent in-app messages of one customer."""
    return (
        Message.customer_id == customer_id,
        Message.channel == "in_app",
        Message.status == "sent",
    )


@bp.get("/inbox")
def inbox():
    customer_id = _customer_id()
    if customer_id is None:
        return jsonify({"messages": [], "unread": 0})
    limit = min(max(request.args.get("limit", 20, type=int) or 20, 1), 100)
    with operation_session() as session:
        rows = list(
            session.scalars(
                select(Message)
                .where(*_mine(customer_id))
                .order_by(Message.sent_at.desc(), Message.id.desc())
                .limit(limit)
            )
        )
        unread = session.scalar(
            select(func.count()).where(*_mine(customer_id), Message.read_at.is_(None))
        )
        messages = [
            {
                "id": m.id,
                "subject": m.subject,
                "body": m.body,
                "text": _text(m.body),
                "sent_at": m.sent_at.isoformat() if m.sent_at else None,
                "read": m.read_at is not None,
            }
            for m in rows
        ]
    return jsonify({"messages": messages, "unread": unread or 0})


@bp.post("/inbox/<int(max=9223372036854775807):message_id>/read")
def inbox_read(message_id: int):
    customer_id = _customer_id()
    with operation_session() as session:
        changed = session.execute(
            update(Message)
            .where(Message.id == message_id, *_mine(customer_id))
            .values(read_at=func.coalesce(Message.read_at, utcnow()))
        ).rowcount
    if not changed:
        raise ApiError(404, f"message: no in-app message {message_id} for you")
    return jsonify({"ok": True})
