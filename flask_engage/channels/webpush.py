"""Web push through pywebpush with VAPID."""

from __future__ import annotations

import base64
import json
from typing import Any

from flask import current_app
from sqlalchemy import ColumnElement, delete, exists, select
from sqlalchemy.orm import Session

from ..errors import ConfigurationError
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
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

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

    def reachable(self) -> ColumnElement[bool]:
        customers = Customer.__table__
        return exists(select(1).where(PushSubscription.customer_id == customers.c.id))

    def send(self, outgoing: Outgoing, connection: Any) -> None:
        push(outgoing.session, outgoing.customer, outgoing.rendered, outgoing.message.id)


def push(session: Session, customer: Customer, rendered: Rendered, message_id: int) -> None:
    """Push to every subscription of the customer; expired ones are deleted.

    Raises when no subscription accepted the message.
    """
    from pywebpush import WebPushException, webpush
    from requests import RequestException

    private, _, subject = vapid_keys()
    subscriptions = list(
        session.scalars(select(PushSubscription).where(PushSubscription.customer_id == customer.id))
    )
    if not subscriptions:
        raise SkipMessage("no_address")
    payload = json.dumps(
        {"title": rendered.subject or "", "body": rendered.text, "message_id": message_id}
    )
    delivered, errors = 0, []
    for subscription in subscriptions:
        try:
            webpush(
                subscription_info={
                    "endpoint": subscription.endpoint,
                    "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth},
                },
                data=payload,
                vapid_private_key=private,
                vapid_claims={"sub": subject},  # a fresh dict: pywebpush writes aud/exp into it
                timeout=10,
            )
            delivered += 1
        except WebPushException as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status in GONE:
                session.execute(
                    delete(PushSubscription).where(PushSubscription.id == subscription.id)
                )
                errors.append(f"subscription expired ({status})")
            else:
                errors.append(f"push service answered {status}: {exc}")
        except RequestException as exc:
            errors.append(f"push service unreachable: {exc}")
    if not delivered:
        raise RuntimeError("; ".join(errors) or "no subscription accepted the message")
