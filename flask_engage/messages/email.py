"""Email through Flask-Mail: one recipient per message, RFC 8058 one-click unsubscribe."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask_mail import Message as MailMessage

from ..errors import ConfigurationError
from ..models import Customer
from .templates import Rendered


def sender() -> str:
    """``ENGAGE_MAIL_SENDER``, else ``MAIL_DEFAULT_SENDER``."""
    config = current_app.config
    value = config.get("ENGAGE_MAIL_SENDER") or config.get("MAIL_DEFAULT_SENDER")
    if not value:
        raise ConfigurationError("set ENGAGE_MAIL_SENDER (or MAIL_DEFAULT_SENDER) to send email")
    return value


def build(customer: Customer, rendered: Rendered, unsubscribe_url: str) -> MailMessage:
    """The Flask-Mail message: text (+ HTML) parts, unsubscribe link and headers."""
    text, markup = rendered.text, rendered.html
    if unsubscribe_url not in text:
        text = f"{text}\n\n--\nUnsubscribe: {unsubscribe_url}"
    if markup is not None and unsubscribe_url not in markup:
        markup = (
            f'{markup}\n<p style="font-size:12px;color:#666">'
            f'<a href="{unsubscribe_url}">Unsubscribe</a></p>'
        )
    return MailMessage(
        subject=rendered.subject or "",
        recipients=[customer.email],
        body=text,
        html=markup,
        sender=sender(),
        extra_headers={
            "List-Unsubscribe": f"<{unsubscribe_url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )


def send(connection: Any, customer: Customer, rendered: Rendered, unsubscribe_url: str) -> None:
    """Send through an open Flask-Mail connection (one per batch)."""
    connection.send(build(customer, rendered, unsubscribe_url))
