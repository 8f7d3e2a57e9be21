"""Email through Flask-Mail: one recipient per message, RFC 8058 one-click unsubscribe."""

from __future__ import annotations

import io
import smtplib
from collections.abc import Iterator
from contextlib import contextmanager
from email import policy
from email.generator import BytesGenerator
from typing import Any

from flask import current_app
from flask_mail import Message as FlaskMailMessage
from sqlalchemy import ColumnElement, and_

from ..errors import ConfigurationError
from ..messages.templates import Rendered
from ..models import Customer
from .base import Channel, Outgoing, RetryLater, SkipMessage

_WIRE = policy.compat32.clone(linesep="\r\n", max_line_length=998)  # RFC 5322 hard limit


class MailMessage(FlaskMailMessage):
    """Flask-Mail's message, serialized without re-parsing every header.

    Flask-Mail builds the MIME tree with ``email.mime`` (already encoded headers)
    and then serializes it under ``policy.SMTP``, which parses each header again
    through the header registry: half the cost of a broadcast's CPU time. The same
    tree written by the compat32 generator with CRLF line ends is byte-for-byte the
    same message structure, twice as fast.
    """

    def as_bytes(self) -> bytes:
        buffer = io.BytesIO()
        BytesGenerator(buffer, mangle_from_=False, policy=_WIRE).flatten(self._message())
        return buffer.getvalue()


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
        recipients=[customer.email or ""],
        body=text,
        html=markup,
        sender=sender(),
        extra_headers={
            "List-Unsubscribe": f"<{unsubscribe_url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )


class EmailChannel(Channel):
    """Email through Flask-Mail, one SMTP connection per batch."""

    name = "email"
    label = "Email"
    needs_subject = True
    tracking = "links"
    engagement = {"opened": "Email opened", "clicked": "Email clicked"}

    def reachable(self) -> ColumnElement[bool]:
        customers = Customer.__table__
        return and_(customers.c.email.is_not(None), customers.c.email != "")

    @contextmanager
    def connect(self) -> Iterator[Any]:
        try:
            connection = current_app.extensions["mail"].connect()
            opened = connection.__enter__()
        except (OSError, smtplib.SMTPException) as exc:
            raise RetryLater(f"SMTP server unreachable: {exc}") from None
        try:
            yield opened
        finally:
            try:
                connection.__exit__(None, None, None)
            except (OSError, smtplib.SMTPException):
                pass  # the server went away: the statuses are already written

    def send(self, outgoing: Outgoing, connection: Any) -> None:
        if not outgoing.customer.email:
            raise SkipMessage("no_address")
        assert outgoing.unsubscribe_url is not None
        message = build(outgoing.customer, outgoing.rendered, outgoing.unsubscribe_url)
        try:
            connection.send(message)
        except smtplib.SMTPResponseException as exc:
            if 400 <= exc.smtp_code < 500:
                raise RetryLater(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from None
            raise
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise RetryLater(f"SMTP connection lost: {exc}") from None
