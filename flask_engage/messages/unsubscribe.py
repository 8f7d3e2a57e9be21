"""Channel subscriptions and signed unsubscribe tokens.

A token carries a customer's internal id and a channel, signed with the app's
``SECRET_KEY`` (itsdangerous); it cannot be guessed or altered, and does not expire
(``List-Unsubscribe`` links must keep working).
"""

from __future__ import annotations

from typing import Any

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import delete, select

from .. import signals
from ..channels import opt_out_channels
from ..db import insert_ignoring_conflicts, operation_session
from ..errors import ConfigurationError, NotFound, ValidationError
from ..models import Customer, Unsubscription, utcnow
from ..outbox import add_to_outbox
from ..tracking import check_customer_id

SALT = "flask-engage-unsubscribe"


def _serializer() -> URLSafeSerializer:
    secret = current_app.config.get("SECRET_KEY")
    if not secret:
        raise ConfigurationError("SECRET_KEY must be set to sign unsubscribe links")
    return URLSafeSerializer(secret, salt=SALT)


def make_token(customer_id: int, channel: str) -> str:
    """A signed token for one customer (internal id) and channel."""
    return _serializer().dumps([customer_id, channel])


def read_token(token: str) -> tuple[int, str]:
    """The (customer id, channel) of a token; ValidationError if forged or altered."""
    try:
        data = _serializer().loads(token)
    except BadSignature:
        raise ValidationError(
            "token: invalid or tampered unsubscribe token", field="token"
        ) from None
    if (
        not isinstance(data, list)
        or len(data) != 2
        or not isinstance(data[0], int)
        or data[1] not in opt_out_channels()
    ):
        raise ValidationError("token: invalid unsubscribe token", field="token")
    return data[0], data[1]


def check_channel(channel: Any) -> str:
    """A channel customers can opt out of; ValidationError otherwise."""
    names = opt_out_channels()
    if channel not in names:
        raise ValidationError(
            f"channel: expected one of {', '.join(names)}, got {channel!r}", field="channel"
        )
    return channel


def set_subscription(
    customer_ref: int | str, channel: str, *, subscribed: bool, internal: bool = False
) -> Customer:
    """Opt a customer out of (or back into) a channel; commits.

    ``customer_ref`` is the host's id, or Engage's internal id when ``internal``.
    """
    check_channel(channel)
    with operation_session() as session:
        if internal:
            customer = session.get(Customer, customer_ref)
        else:
            external = check_customer_id(customer_ref)
            customer = session.scalar(select(Customer).where(Customer.external_id == external))
        if customer is None:
            raise NotFound(f"customer: no customer {customer_ref!r}")
        if subscribed:
            changed = session.execute(
                delete(Unsubscription).where(
                    Unsubscription.customer_id == customer.id, Unsubscription.channel == channel
                )
            ).rowcount
        else:
            # RETURNING tells whether a row was added; rowcount is unreliable here on psycopg
            changed = (
                session.execute(
                    insert_ignoring_conflicts(
                        session, Unsubscription.__table__, ["customer_id", "channel"]
                    )
                    .values(customer_id=customer.id, channel=channel, created_at=utcnow())
                    .returning(Unsubscription.customer_id)
                ).first()
                is not None
            )
        if changed:
            add_to_outbox(session, "evaluate", [customer.id])
    if changed and not subscribed:
        signals.customer_unsubscribed.send(
            current_app._get_current_object(), customer=customer, channel=channel
        )
    return customer
