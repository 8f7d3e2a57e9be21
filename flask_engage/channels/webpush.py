"""Web push through pywebpush with VAPID.

Endpoints are URLs that browsers (so, visitors) supply. Sending checks each one
again: an https URL (``http`` only with ``ENGAGE_PUSH_ALLOW_PRIVATE``), resolved
when connecting, every address public, no redirect followed
(:func:`flask_engage.addresses.public_session`). Only the push service's status
code is kept in the message's error, never its answer's body.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import current_app
from pywebpush import WebPushException, webpush
from requests import RequestException
from requests import Session as HTTPSession
from sqlalchemy import ColumnElement, delete, exists, select
from sqlalchemy.orm import Session

from ..addresses import parse_url, public_session
from ..errors import ConfigurationError, UnsafeAddress
from ..messages.templates import Rendered
from ..models import Customer, PushSubscription
from .base import Channel, Outgoing, SkipMessage

GONE = (404, 410)


def vapid_keys() -> tuple[str, str, str]:
    """(private key, public key, subject) from config."""
    private = current_app.config.get("ENGAGE_VAPID_PRIVATE_KEY")
    public = current_app.config.get("ENGAGE_VAPID_PUBLIC_KEY")
    subject = current_app.config.get("ENGAGE_VAPID_SUBJECT")
    if not (private and public and subject):
        raise ConfigurationError(
            "web push needs ENGAGE_VAPID_PRIVATE_KEY, ENGAGE_VAPID_PUBLIC_KEY"
            " and ENGAGE_VAPID_SUBJECT"
        )
    return private, public, subject


def generate_vapid_keys() -> tuple[str, str]:
    """A new (private, public) VAPID key pair, base64url encoded."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_numbers().private_value.to_bytes(32, "big")
    public = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return _b64url(private), _b64url(public)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class WebPushChannel(Channel):
    """Web Push to every browser the customer subscribed."""

    name = "push"
    label = "Web push"
    needs_subject = True
    tracking = "report"
    engagement = {"clicked": "Push clicked"}

    def reachable(self) -> ColumnElement[bool]:
        customers = Customer.__table__
        return exists(select(1).where(PushSubscription.customer_id == customers.c.id))

    def reads(self) -> Sequence[str]:
        return ("channel",)  # push subscriptions: recorded as a channel change

    def send(self, outgoing: Outgoing, connection: Any) -> None:
        push(
            outgoing.session,
            outgoing.customer,
            outgoing.rendered,
            outgoing.message.id,
            outgoing.report_url,
        )


def push(
    session: Session,
    customer: Customer,
    rendered: Rendered,
    message_id: int,
    report_url: str | None = None,
) -> None:
    """Push to every subscription of the customer; expired ones are deleted.

    ``report_url``: where the service worker reports a click (``sw.js``).
    Raises when no subscription accepted the message.
    """
    private, _, subject = vapid_keys()
    subscriptions = list(
        session.scalars(select(PushSubscription).where(PushSubscription.customer_id == customer.id))
    )
    if not subscriptions:
        raise SkipMessage("no_address")
    data: dict[str, Any] = {
        "title": rendered.subject or "",
        "body": rendered.text,
        "message_id": message_id,
    }
    if report_url:
        data["report"] = report_url
    payload = json.dumps(data)
    allow_private = current_app.config["ENGAGE_PUSH_ALLOW_PRIVATE"]
    delivered, errors = 0, []
    with public_session(allow_private=allow_private) as http:
        for subscription in subscriptions:
            try:
                _push_one(http, subscription, payload, private, subject, allow_private)
                delivered += 1
            except _Refused as refused:
                errors.append(str(refused))
                if refused.status in GONE:
                    session.execute(
                        delete(PushSubscription).where(PushSubscription.id == subscription.id)
                    )
    if not delivered:
        raise RuntimeError("; ".join(errors) or "no subscription accepted the message")


class _Refused(Exception):
    """One subscription did not take the message; says why with status codes only."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


def _push_one(
    http: HTTPSession,
    subscription: PushSubscription,
    payload: str,
    private_key: str,
    subject: str,
    allow_private: bool,
) -> None:
    """Send to one subscription; :class:`_Refused` when it was not accepted.

    The push service's answer is reduced to its status: its body may hold anything.
    """
    try:
        parse_url(subscription.endpoint, "endpoint", allow_private=allow_private)
        webpush(
            subscription_info={
                "endpoint": subscription.endpoint,
                "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth},
            },
            data=payload,
            vapid_private_key=private_key,
            vapid_claims={"sub": subject},  # a fresh dict: pywebpush writes aud/exp into it
            timeout=10,
            requests_session=http,
        )
    except UnsafeAddress:
        raise _Refused("push endpoint refused: not an https URL of a public host") from None
    except WebPushException as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in GONE:
            raise _Refused(f"subscription expired ({status})", status) from None
        if status is None:
            raise _Refused("push failed before reaching the push service") from None
        raise _Refused(f"push service answered {status}", status) from None
    except RequestException as exc:
        raise _Refused(f"push service unreachable ({type(exc).__name__})") from None
