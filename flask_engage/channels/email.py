"""Email through Flask-Mail: one recipient per message, RFC 8058 one-click unsubscribe.

A delivery run sends email over ``ENGAGE_SMTP_CONNECTIONS`` SMTP connections at once
(:meth:`EmailChannel.parallel`): the worker's own thread renders each message and
writes it to bytes once (:meth:`EmailChannel.prepare` returns an :class:`Envelope`),
pool threads only talk SMTP (:meth:`EmailChannel.transmit`) over Flask-Mail's
connections, doing what Flask-Mail's ``Connection.send`` does, so ``MAIL_*``
settings, ``MAIL_MAX_EMAILS`` and ``email_dispatched`` (``record_messages``) work
as with ``mail.send``. A server that offers PIPELINING (RFC 2920) gets ``MAIL
FROM``, ``RCPT TO`` and ``DATA`` in one write: two round trips a message, not four.
"""

from __future__ import annotations

import base64
import io
import re
import secrets
import smtplib
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from email import policy
from email.generator import BytesGenerator
from email.header import Header
from email.utils import formatdate, make_msgid
from functools import lru_cache
from typing import Any

from flask import current_app
from flask_mail import BadHeaderError, email_dispatched, sanitize_address
from flask_mail import Message as FlaskMailMessage
from sqlalchemy import ColumnElement, and_

from ..errors import ConfigurationError
from ..messages.templates import Rendered
from ..models import Customer
from .base import Channel, DeliveryFailed, Outgoing, RetryLater, SkipMessage

_WIRE = policy.compat32.clone(linesep="\r\n", max_line_length=998)  # RFC 5322 hard limit

#: Header values longer than this are folded (RFC 5322 allows 998 characters a line).
_LONGEST_HEADER = 900


@lru_cache(maxsize=1024)
def _header(value: str) -> str:
    """A header value as written: as it is when short ASCII, else RFC 2047 and folded.

    Cached: a broadcast's subject and sender are encoded once, not per recipient.
    """
    if value.isascii() and len(value) <= _LONGEST_HEADER:
        return value
    return Header(value, "utf-8", maxlinelen=76).encode(linesep="\r\n")


@lru_cache(maxsize=256)
def _address(address: str) -> str:
    """An address header as Flask-Mail writes it (IDN domains, encoded names)."""
    return sanitize_address(address, "utf-8")


def _recipient(address: str) -> str:
    if address.isascii() and "<" not in address and '"' not in address:
        return address  # what sanitize_address returns for a bare address, without its cost
    return sanitize_address(address, "utf-8")


def _part(content: str, subtype: str) -> tuple[bytes, bytes]:
    """A text part's headers and its base64 body: the text with CRLF line ends, as the
    ``email`` package encodes it."""
    headers = (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "MIME-Version: 1.0\r\n"
        "Content-Transfer-Encoding: base64\r\n"
    ).encode("ascii")
    canonical = content.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
    return headers, base64.encodebytes(canonical).replace(b"\n", b"\r\n")


class MailMessage(FlaskMailMessage):
    """Flask-Mail's message, written to bytes without the ``email`` package's generator.

    Flask-Mail builds a MIME tree with ``email.mime`` and serializes it through the
    ``email`` generator and header registry: over a millisecond per message, most of
    a broadcast's CPU time. The message Engage sends (one recipient, a text part and
    optionally an HTML part, UTF-8, no attachments) is written here directly, as a
    ``multipart/alternative`` (or a single ``text/plain`` part) with base64 parts and
    headers encoded once per distinct value. Any other message goes through the
    compat32 generator with CRLF line ends.
    """

    def as_bytes(self) -> bytes:
        body, html = self.body, self.alts.get("html")
        simple = (
            isinstance(body, str)
            and not self.attachments
            and not self.cc
            and not self.reply_to
            and set(self.alts) <= {"html"}
            and self.charset in (None, "utf-8")
        )
        if not simple or body is None:
            buffer = io.BytesIO()
            BytesGenerator(buffer, mangle_from_=False, policy=_WIRE).flatten(self._message())
            return buffer.getvalue()
        return _write(
            subject=self.subject,
            sender=_address(str(self.sender)),
            to=", ".join(sorted({_recipient(str(r)) for r in self.recipients})),
            date=self.date or time.time(),
            msg_id=self.msgId,
            headers=self.extra_headers or {},
            text=body,
            html=html,
        )


@lru_cache(maxsize=4)
def _date(second: int) -> str:
    return formatdate(second, localtime=True)


def _write(
    *,
    subject: str | None,
    sender: str,
    to: str,
    date: float,
    msg_id: str,
    headers: Mapping[str, str],
    text: str,
    html: str | None,
) -> bytes:
    """A one-recipient text (+ HTML) message as :meth:`MailMessage.as_bytes` writes it."""
    lines = [f"Subject: {_header(subject)}"] if subject else []
    lines += [f"From: {sender}", f"To: {to}", f"Date: {_date(int(date))}", f"Message-ID: {msg_id}"]
    lines += [f"{name}: {_header(value)}" for name, value in headers.items()]
    head = "\r\n".join(lines).encode("ascii") + b"\r\n\r\n"
    text_headers, text_part = _part(text, "plain")
    if html is None:
        return text_headers + head + text_part
    html_headers, markup = _part(html, "html")
    boundary = f"=_{secrets.token_hex(16)}"  # "_" never occurs in a base64 part
    return b"".join(
        [
            f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n'.encode(),
            b"MIME-Version: 1.0\r\n",
            head,
            f"--{boundary}\r\n".encode(),
            text_headers,
            b"\r\n",
            text_part,
            f"\r\n--{boundary}\r\n".encode(),
            html_headers,
            b"\r\n",
            markup,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )


def sender() -> str:
    """``ENGAGE_MAIL_SENDER``, else ``MAIL_DEFAULT_SENDER``."""
    config = current_app.config
    value = config.get("ENGAGE_MAIL_SENDER") or config.get("MAIL_DEFAULT_SENDER")
    if not value:
        raise ConfigurationError("set ENGAGE_MAIL_SENDER (or MAIL_DEFAULT_SENDER) to send email")
    return value


def _parts(rendered: Rendered, unsubscribe_url: str) -> tuple[str, str | None, dict[str, str]]:
    """Text, HTML and extra headers of an email: the unsubscribe link in both parts
    (added when the template has none) and in ``List-Unsubscribe`` (RFC 8058)."""
    text, markup = rendered.text, rendered.html
    if unsubscribe_url not in text:
        text = f"{text}\n\n--\nUnsubscribe: {unsubscribe_url}"
    if markup is not None and unsubscribe_url not in markup:
        markup = (
            f'{markup}\n<p style="font-size:12px;color:#666">'
            f'<a href="{unsubscribe_url}">Unsubscribe</a></p>'
        )
    headers = {
        "List-Unsubscribe": f"<{unsubscribe_url}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    return text, markup, headers


def build(customer: Customer, rendered: Rendered, unsubscribe_url: str) -> MailMessage:
    """The Flask-Mail message: text (+ HTML) parts, unsubscribe link and headers."""
    text, markup, headers = _parts(rendered, unsubscribe_url)
    return MailMessage(
        subject=rendered.subject or "",
        recipients=[customer.email or ""],
        body=text,
        html=markup,
        sender=sender(),
        extra_headers=headers,
    )


@lru_cache(maxsize=1)
def _domain() -> str:
    """This machine's name, as ``make_msgid`` finds it (a DNS lookup: once)."""
    return socket.getfqdn()


def _has_newline(value: str) -> bool:
    return "\r" in value or "\n" in value


@dataclass(eq=False)
class Envelope:
    """One email ready for SMTP (what :meth:`EmailChannel.prepare` returns): the
    envelope addresses, the bytes sent, and what they were written from, for the
    Flask-Mail message ``email_dispatched`` carries (made only when it has receivers).
    """

    sender: str
    recipient: str
    subject: str
    text: str
    html: str | None
    headers: dict[str, str]
    date: float
    msg_id: str
    #: ``MAIL FROM`` and ``RCPT TO`` as Flask-Mail's ``sanitize_address`` writes them.
    envelope_from: str
    envelope_to: str
    data: bytes

    def message(self) -> MailMessage:
        """The Flask-Mail message these bytes are (same fields, date and Message-ID)."""
        message = MailMessage(
            subject=self.subject,
            recipients=[self.recipient],
            body=self.text,
            html=self.html,
            sender=self.sender,
            extra_headers=dict(self.headers),
            date=self.date,
        )
        message.msgId = self.msg_id
        return message


def envelope(address: str, rendered: Rendered, unsubscribe_url: str) -> Envelope:
    """The email :func:`build` makes, written to bytes without a Flask-Mail message.

    Raises Flask-Mail's ``BadHeaderError`` for a newline in an address or the subject.
    """
    from_header = sender()
    subject = rendered.subject or ""
    if _has_newline(from_header) or _has_newline(address) or _has_newline(subject):
        raise BadHeaderError("newline in an address or the subject")
    text, markup, headers = _parts(rendered, unsubscribe_url)
    date, msg_id = time.time(), make_msgid(domain=_domain())
    envelope_from, envelope_to = _address(from_header), _recipient(address)
    data = _write(
        subject=subject,
        sender=envelope_from,
        to=envelope_to,
        date=date,
        msg_id=msg_id,
        headers=headers,
        text=text,
        html=markup,
    )
    return Envelope(
        from_header,
        address,
        subject,
        text,
        markup,
        headers,
        date,
        msg_id,
        envelope_from,
        envelope_to,
        data,
    )


_LEADING_DOT = re.compile(rb"(?m)^\.")
#: An address in a server's reply (kept out of stored errors: no customer data there).
_ADDRESS = re.compile(r"<?[^\s<>@]+@[^\s<>]+>?")


def _pipelined(host: smtplib.SMTP, envelope: Envelope) -> None:
    """``host.sendmail`` with PIPELINING (RFC 2920), for a server that offers it:
    ``MAIL FROM``, ``RCPT TO`` and ``DATA`` in one write, their replies read
    together, then the message: two round trips instead of four. Raises what
    ``sendmail`` raises for the same replies (and leaves the connection as it does).
    """
    options = f" size={len(envelope.data)}" if host.has_extn("size") else ""
    host.send(
        f"MAIL FROM:{smtplib.quoteaddr(envelope.envelope_from)}{options}\r\n"
        f"RCPT TO:{smtplib.quoteaddr(envelope.envelope_to)}\r\n"
        "DATA\r\n"
    )
    mail, rcpt, data = host.getreply(), host.getreply(), host.getreply()
    if data[0] == 354:
        if mail[0] == 250 and rcpt[0] in (250, 251):
            body = _LEADING_DOT.sub(b"..", envelope.data)
            if not body.endswith(b"\r\n"):
                body += b"\r\n"
            host.send(body + b".\r\n")
        else:  # DATA accepted without a sender or recipient: an empty message ends it
            host.send(b".\r\n")
        data = host.getreply()
    failure: smtplib.SMTPException | None = None
    if mail[0] != 250:
        failure, code = smtplib.SMTPSenderRefused(*mail, envelope.envelope_from), mail[0]
    elif rcpt[0] not in (250, 251):
        failure = smtplib.SMTPRecipientsRefused({envelope.envelope_to: rcpt})
        code = rcpt[0]
    elif data[0] != 250:
        failure, code = smtplib.SMTPDataError(*data), data[0]
    if failure is not None:
        if code == 421:
            host.close()
        else:
            try:
                host.rset()
            except smtplib.SMTPServerDisconnected:
                pass  # as sendmail: the failure says more
        raise failure


def _send(connection: Any, envelope: Envelope) -> None:
    """What Flask-Mail's ``Connection.send`` does with a message (send it unless
    sending is suppressed, ``email_dispatched``, a new connection every
    ``MAIL_MAX_EMAILS``), with the envelope and bytes :func:`envelope` wrote."""
    host = connection.host
    if host is not None:
        host.ehlo_or_helo_if_needed()
        if host.has_extn("pipelining"):
            _pipelined(host, envelope)
        else:
            host.sendmail(envelope.envelope_from, [envelope.envelope_to], envelope.data)
    if email_dispatched.receivers:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        email_dispatched.send(app, message=envelope.message())
    connection.num_emails += 1
    if connection.num_emails == connection.mail.max_emails:
        connection.num_emails = 0
        if connection.host:
            connection.host.quit()
            connection.host = connection.configure_host()


class EmailChannel(Channel):
    """Email through Flask-Mail, over ``ENGAGE_SMTP_CONNECTIONS`` connections at once."""

    name = "email"
    label = "Email"
    needs_subject = True
    tracking = "links"
    engagement = {"opened": "Email opened", "clicked": "Email clicked"}

    def reachable(self) -> ColumnElement[bool]:
        customers = Customer.__table__
        return and_(customers.c.email.is_not(None), customers.c.email != "")

    def reads(self) -> Sequence[str]:
        return ("attribute:email",)

    def parallel(self) -> int:
        """``ENGAGE_SMTP_CONNECTIONS``; 1 while Flask-Mail suppresses sending (tests)."""
        if current_app.extensions["mail"].suppress:
            return 1
        return int(current_app.config["ENGAGE_SMTP_CONNECTIONS"])

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

    def prepare(self, outgoing: Outgoing) -> Envelope:
        if not outgoing.customer.email:
            raise SkipMessage("no_address")
        assert outgoing.unsubscribe_url is not None
        return envelope(outgoing.customer.email, outgoing.rendered, outgoing.unsubscribe_url)

    def transmit(self, prepared: Envelope, connection: Any) -> None:
        try:
            _send(connection, prepared)
        except smtplib.SMTPRecipientsRefused as exc:  # an OSError, but not a lost connection
            ((code, reply),) = exc.recipients.values()  # one recipient per message
            said = _ADDRESS.sub("<address>", reply.decode("utf-8", "replace"))[:200]
            if 400 <= code < 500:
                raise RetryLater(f"SMTP {code}: recipient refused for now: {said}") from None
            raise DeliveryFailed(f"SMTP {code}: recipient refused: {said}") from None
        except smtplib.SMTPResponseException as exc:
            if 400 <= exc.smtp_code < 500:
                raise RetryLater(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from None
            raise
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise RetryLater(f"SMTP connection lost: {exc}") from None

    def send(self, outgoing: Outgoing, connection: Any) -> None:
        self.transmit(self.prepare(outgoing), connection)
