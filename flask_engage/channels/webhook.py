"""Webhooks: a send POSTs its rendered body to the team's own systems, signed.

A send is ``{"channel": "webhook", "url": URL, "body": TEMPLATE, "headers": {...}}``
(a broadcast takes ``url`` and ``headers`` as its ``options``). The URL and the
header values are templates like the body; whatever an expression puts in the URL
is percent-encoded, so customer data fills a path segment or a query value and
never changes where the request goes. The scheme and host are written out in the
send, checked when it is saved (:func:`~flask_engage.addresses.check_url`: public
addresses only, unless ``ENGAGE_WEBHOOK_ALLOW_PRIVATE``) and again on every
connection (:func:`~flask_engage.addresses.public_session`, which follows no
redirect).

Every request carries ``Idempotency-Key`` (the message id: the same on every retry
of a message), ``X-Engage-Timestamp`` (Unix seconds) and two HMAC-SHA256 signatures
keyed with ``ENGAGE_WEBHOOK_SECRET``: ``X-Engage-Signature`` of the body, and
``X-Engage-Request-Signature`` of ``"{key}.{timestamp}." + body`` (what a receiver
checks to refuse replays). A 2xx answer sends the message; 408, 429, 5xx, timeouts
and connection errors leave it for a retry with backoff; any other answer fails it
with its status code. The receiver's answer is read (at most :data:`MAX_RESPONSE`
bytes, then dropped) only so the connection can serve the next message: its status
and latency are kept (the message's ``receipt``), its body never.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from uuid import uuid4

import requests
from flask import current_app
from requests.structures import CaseInsensitiveDict

from ..addresses import check_url, parse_url, public_session
from ..config import VERSION
from ..errors import ConfigurationError, UnsafeAddress, ValidationError
from ..messages.templates import (
    SAMPLE_CONTEXT,
    Rendered,
    check_template,
    render,
    render_text,
    render_url,
)
from ..models import Customer
from .base import Channel, DeliveryFailed, Outgoing, RetryLater

__all__ = [
    "MAX_RESPONSE",
    "RequestReport",
    "WebhookChannel",
    "WebhookRequest",
    "build_request",
    "send_test_request",
    "signature_headers",
]

#: Bytes of a receiver's answer read before the connection is dropped.
MAX_RESPONSE = 64 * 1024
#: Most headers a send may add.
MAX_HEADERS = 20
#: Longest header value template.
MAX_HEADER_LENGTH = 4096
#: Answers that mean "try again later", besides every 5xx.
RETRY_STATUSES = frozenset({408, 429})

#: Headers that belong to the transport or to Engage's signature: a send cannot set them.
_RESERVED = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "idempotency-key"}
)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: The part of a URL template before its first ``{`` must hold the scheme and the host.
_WRITTEN_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]+[/?#]")
_LINE_BREAKS = re.compile(r"[\r\n\x00]")


def _secret(field: str = "channel") -> str:
    secret = current_app.config.get("ENGAGE_WEBHOOK_SECRET")
    if not secret:
        raise ConfigurationError(
            f"{field}: webhook requests are signed: set ENGAGE_WEBHOOK_SECRET first"
        )
    return str(secret)


def _allow_private() -> bool:
    return bool(current_app.config.get("ENGAGE_WEBHOOK_ALLOW_PRIVATE"))


def _timeout() -> int:
    return int(current_app.config.get("ENGAGE_WEBHOOK_TIMEOUT") or 10)


def _check_url(url: Any, field: str) -> str:
    if not isinstance(url, str) or not url.strip():
        raise ValidationError(f"{field}: a webhook needs a URL", field=field)
    if "{" in url and not _WRITTEN_ORIGIN.match(url.split("{", 1)[0]):
        raise ValidationError(
            f"{field}: write the scheme and host out; templates may fill the path and query",
            field=field,
        )
    check_template(url, field)
    sample = render_url(url, SAMPLE_CONTEXT, field)
    check_url(sample, field, allow_private=_allow_private(), https_only=False)
    return url


def _check_headers(headers: Any, path: str) -> dict[str, str]:
    field = f"{path}headers"
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise ValidationError(
            f"{field}: expected an object of header names and value templates", field=field
        )
    if len(headers) > MAX_HEADERS:
        raise ValidationError(f"{field}: at most {MAX_HEADERS} headers", field=field)
    seen: set[str] = set()
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValidationError(f"{field}: {name!r} is not a header name", field=field)
        here = f"{field}.{name}"
        lowered = name.lower()
        if lowered in _RESERVED or lowered.startswith("x-engage-"):
            raise ValidationError(f"{here}: set by Engage, not by a send", field=here)
        if lowered in seen:
            raise ValidationError(f"{here}: given twice", field=here)
        seen.add(lowered)
        if not isinstance(value, str):
            raise ValidationError(f"{here}: expected a template string", field=here)
        if len(value) > MAX_HEADER_LENGTH:
            raise ValidationError(f"{here}: longer than {MAX_HEADER_LENGTH} characters", field=here)
        if _LINE_BREAKS.search(value):
            raise ValidationError(f"{here}: a header value is one line", field=here)
        check_template(value, here)
    return dict(headers)


def signature_headers(body: bytes, *, secret: str, key: str, timestamp: int) -> dict[str, str]:
    """The headers that let a receiver trust a request: ``Idempotency-Key``,
    ``X-Engage-Timestamp``, ``X-Engage-Signature`` (HMAC-SHA256 of ``body``) and
    ``X-Engage-Request-Signature`` (HMAC-SHA256 of ``"{key}.{timestamp}." + body``)."""
    secret_bytes = secret.encode()
    signed = f"{key}.{timestamp}.".encode() + body
    return {
        "Idempotency-Key": key,
        "X-Engage-Timestamp": str(timestamp),
        "X-Engage-Signature": "sha256=" + hmac.new(secret_bytes, body, hashlib.sha256).hexdigest(),
        "X-Engage-Request-Signature": "sha256="
        + hmac.new(secret_bytes, signed, hashlib.sha256).hexdigest(),
    }


@dataclass(frozen=True)
class WebhookRequest:
    """One request, ready to POST: its body is exactly the bytes that were signed."""

    url: str
    headers: Mapping[str, str]
    body: bytes


def build_request(
    options: Mapping[str, Any],
    context: Mapping[str, Any],
    rendered: Rendered,
    *,
    key: str,
    secret: str,
    timestamp: int | None = None,
) -> WebhookRequest:
    """Render a send's URL and headers for one customer, and sign its rendered body.

    The body goes as rendered; it is labelled ``application/json`` when it parses as
    JSON, else ``text/plain`` (a ``Content-Type`` header of the send wins).
    """
    url = render_url(options["url"], context, "url")
    parse_url(url, "url", allow_private=_allow_private(), https_only=False)
    text = rendered.text
    body = text.encode("utf-8")
    try:
        json.loads(text)
        content_type = "application/json"
    except ValueError:
        content_type = "text/plain; charset=utf-8"
    headers: CaseInsensitiveDict[str] = CaseInsensitiveDict(
        {"Content-Type": content_type, "User-Agent": f"flask-engage/{VERSION}"}
    )
    for name, template in (options.get("headers") or {}).items():
        value = render_text(template, context, f"headers.{name}")
        if _LINE_BREAKS.search(value):
            raise DeliveryFailed(f"headers.{name}: the rendered value is not one line")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise DeliveryFailed(
                f"headers.{name}: the rendered value has characters a header cannot carry"
            ) from None
        headers[name] = value
    stamp = int(time.time()) if timestamp is None else timestamp
    headers.update(signature_headers(body, secret=secret, key=key, timestamp=stamp))
    return WebhookRequest(url, headers, body)


def _drain(response: requests.Response, deadline: float) -> None:
    """Read and drop the answer so its connection can be reused; give up (the
    connection is then closed) past :data:`MAX_RESPONSE` bytes or ``deadline``."""
    received = 0
    try:
        while received <= MAX_RESPONSE and time.monotonic() < deadline:
            chunk = response.raw.read1(8192, decode_content=False)
            if not chunk:
                return
            received += len(chunk)
    except Exception:  # the status is known: how the rest of the answer went does not matter
        pass


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delay-seconds or an HTTP date);
    None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(min(int(text[:12]), 10**9))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _exchange(http: requests.Session, request: WebhookRequest, receipt: dict[str, Any]) -> None:
    """POST ``request``; write its status and latency into ``receipt``.

    Returns on a 2xx answer; raises :class:`RetryLater` or :class:`DeliveryFailed`
    naming the status code or the kind of failure, never the answer's content.
    """
    timeout = _timeout()
    started = time.monotonic()
    try:
        response = http.post(
            request.url,
            data=request.body,
            headers=dict(request.headers),
            timeout=(timeout, timeout),
            stream=True,
        )
    except UnsafeAddress as exc:
        raise DeliveryFailed(f"url: {exc}") from None
    except requests.Timeout:
        receipt["latency_ms"] = round((time.monotonic() - started) * 1000)
        raise RetryLater(f"webhook timed out after {timeout}s") from None
    except requests.ConnectionError as exc:
        receipt["latency_ms"] = round((time.monotonic() - started) * 1000)
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        raise RetryLater(f"webhook unreachable ({type(reason or exc).__name__})") from None
    except requests.RequestException as exc:
        raise DeliveryFailed(f"webhook request not sent ({type(exc).__name__})") from None
    status = response.status_code
    receipt.update(status=status, latency_ms=round((time.monotonic() - started) * 1000))
    try:
        _drain(response, started + 2 * timeout)
    finally:
        response.close()
    if 200 <= status < 300:
        return
    if status >= 500 or status in RETRY_STATUSES:
        after = retry_after(response.headers.get("Retry-After"))
        waiting = f" (Retry-After: {after:g}s)" if after is not None else ""
        raise RetryLater(f"webhook answered {status}{waiting}", after=after)
    if 300 <= status < 400:
        raise DeliveryFailed(f"webhook answered {status} (redirects are not followed)")
    raise DeliveryFailed(f"webhook answered {status}")


class WebhookChannel(Channel):
    """An HTTP POST per message to a URL of the team's choosing, signed."""

    name = "webhook"
    label = "Webhook"
    opt_out = False
    options = ("url", "headers")
    html_bodies = False

    def check(
        self, spec: Mapping[str, Any], path: str = "", noun: str = "message"
    ) -> dict[str, Any]:
        subject = spec.get("subject")
        if subject is not None and subject != "":
            raise ValidationError(
                f"{path}subject: a webhook has no subject", field=f"{path}subject"
            )
        return super().check({k: v for k, v in spec.items() if k != "subject"}, path, noun)

    def check_options(self, spec: Mapping[str, Any], path: str) -> dict[str, Any]:
        _secret(f"{path}channel")
        checked: dict[str, Any] = {"url": _check_url(spec.get("url"), f"{path}url")}
        headers = _check_headers(spec.get("headers"), path)
        if headers:
            checked["headers"] = headers
        return checked

    @contextmanager
    def connect(self) -> Iterator[requests.Session]:
        with public_session(allow_private=_allow_private()) as http:
            yield http

    def send(self, outgoing: Outgoing, connection: requests.Session) -> None:
        request = build_request(
            outgoing.options,
            outgoing.context,
            outgoing.rendered,
            key=str(outgoing.message.id),
            secret=_secret(),
        )
        _exchange(connection, request, outgoing.receipt)


@dataclass(frozen=True)
class RequestReport:
    """What one test request gave: its status code and latency (``None`` when no answer
    came), and the error a message would have been failed or retried with."""

    status: int | None
    latency_ms: int | None
    error: str | None = None
    #: The request as sent (its body and headers, to show next to the result).
    request: WebhookRequest | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """True when the receiver answered 2xx."""
        return self.error is None


def send_test_request(
    url: str,
    body: str,
    headers: Mapping[str, str] | None = None,
    *,
    customer: Customer | None = None,
) -> RequestReport:
    """Send one request now as a webhook send with these settings would (the admin's
    "send test request"), rendered for ``customer`` or a sample customer.

    Bad settings raise as saving them would; the receiver's answer (or its silence)
    is reported, never raised. The ``Idempotency-Key`` is ``test-`` and a random hex.
    """
    options = WebhookChannel().check(
        {"channel": WebhookChannel.name, "url": url, "body": body, "headers": headers}
    )
    context = {
        "customer": customer.template_context() if customer else SAMPLE_CONTEXT["customer"],
        "unsubscribe_url": None,
    }
    receipt: dict[str, Any] = {}
    request = None
    try:
        request = build_request(
            options,
            context,
            render(None, body, context, html=False),
            key=f"test-{uuid4().hex}",
            secret=_secret(),
        )
        with public_session(allow_private=_allow_private()) as http:
            _exchange(http, request, receipt)
    except (RetryLater, DeliveryFailed, ValidationError) as exc:
        return RequestReport(receipt.get("status"), receipt.get("latency_ms"), str(exc), request)
    return RequestReport(receipt["status"], receipt["latency_ms"], None, request)
