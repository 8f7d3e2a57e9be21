"""In-app inbox for the current identity.

Each message has ``subject`` and ``text`` (plain text: insert them as text) and
``body`` (HTML with customer data escaped: safe to insert as HTML). See
:mod:`flask_engage.channels.inapp`.
"""

from __future__ import annotations

import html
from typing import Any

from flask import jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select, update

from ..db import operation_session
from ..messages.engagement import READ, record
from ..messages.templates import html_to_text, is_html
from ..models import Customer, Message, utcnow
from .common import ApiError, bp, visitor
from .limits import limit_visitor
from .openapi import ERROR, OK, documented, json_answer


def _customer_id(external: str) -> int | None:
    with operation_session() as session:
        return session.scalar(select(Customer.id).where(Customer.external_id == external))


def _text(body: str | None) -> str:
    """The plain text of a stored body, which is HTML (widgets show this as text).

    A plain-text template's body is stored escaped and without tags: unescaping it
    gives back the text exactly.
    """
    if not body:
        return ""
    return html_to_text(body) if is_html(body) else html.unescape(body)


def _mine(customer_id: int | None) -> tuple[Any, ...]:
    """Conditions for the sent in-app messages of one customer."""
    return (
        Message.customer_id == customer_id,
        Message.channel == "in_app",
        Message.status == "sent",
    )


@bp.get("/inbox")
@documented(
    "The visitor's in-app messages, newest first",
    "Inbox",
    {
        "200": json_answer(
            "Messages",
            {
                "type": "object",
                "properties": {"messages": {"type": "array"}, "unread": {"type": "integer"}},
            },
        )
    },
    auth="session",
    query=[
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": 100},
        }
    ],
)
def inbox() -> ResponseReturnValue:
    customer_id = _customer_id(visitor())
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
@documented(
    "Mark an in-app message read", "Inbox", {"200": OK, "404": ERROR}, auth="session", limited=True
)
def inbox_read(message_id: int) -> ResponseReturnValue:
    external = visitor()
    limit_visitor(external)
    customer_id = _customer_id(external)
    with operation_session() as session:
        newly_read = session.execute(
            update(Message)
            .where(Message.id == message_id, *_mine(customer_id), Message.read_at.is_(None))
            .values(read_at=utcnow())
            .returning(Message.id)
        ).first()
        mine = select(Message.id).where(Message.id == message_id, *_mine(customer_id))
        if newly_read is not None:
            record(session, READ, message_id)
        elif session.scalar(mine) is None:
            raise ApiError(404, f"message: no in-app message {message_id} for you")
    return jsonify({"ok": True})
