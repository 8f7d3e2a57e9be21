"""Channel subscriptions and signed unsubscribe tokens.

A token carries the host's customer id (``external_id``), a channel and the
moment it was made, signed with the app's ``SECRET_KEY`` (itsdangerous); it cannot
be guessed or altered, and does not expire (``List-Unsubscribe`` links must keep
working). It never carries Engage's internal id, which a merge deletes.

A token acts on the customer who had that id when it was made. If that customer
has since been merged into another (``engage.merge``), it acts on the customer
they were merged into, found through :class:`~flask_engage.models.CustomerAlias`;
a customer created later under the same id is someone else's.

Test sends carry a *test* token (another salt, no customer at all): its page says
so and it unsubscribes nobody.

Tokens made before version 0.3 carry the internal id. They keep working for the
customer they were made for, or the one that customer was merged into after the
upgrade; the upgrade (migration 0003) records when it ran, and such a token never
acts on a customer created after that moment, so a reused id cannot be reached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import CursorResult, delete, select
from sqlalchemy.orm import Session

from .. import signals
from ..changes import Changes
from ..channels import opt_out_channels
from ..db import insert_ignoring_conflicts, operation_session
from ..errors import ConfigurationError, NotFound, ValidationError
from ..models import Customer, CustomerAlias, SchedulerState, Unsubscription, utcnow
from ..outbox import add_to_outbox
from ..tracking import check_customer_id
from ..values import parse_datetime
from . import signing

#: Salt of tokens: ``[host customer id, channel, when made (Unix milliseconds)]``.
SALT = "flask-engage-unsubscribe:v2"
#: Salt of test-send tokens: ``[channel]``.
TEST_SALT = "flask-engage-unsubscribe:test"
#: Salt of tokens made before 0.3: ``[internal customer id, channel]``.
LEGACY_SALT = "flask-engage-unsubscribe"
#: ``engage_state`` key: when migration 0003 ran (legacy tokens predate it).
LEGACY_CUTOFF = "legacy_unsubscribe_tokens_before"


def _secret() -> str:
    secret = current_app.config.get("SECRET_KEY")
    if not secret:
        raise ConfigurationError("SECRET_KEY must be set to sign unsubscribe links")
    return secret


def make_token(customer_id: int | str, channel: str) -> str:
    """A signed token for one customer (the host's id) and channel."""
    external = check_customer_id(customer_id)
    made = int(utcnow().timestamp() * 1000)
    return signing.dumps(_secret(), SALT, [external, check_channel(channel), made])


def make_test_token(channel: str) -> str:
    """A signed token for a test send: its link unsubscribes nobody."""
    return signing.dumps(_secret(), TEST_SALT, [check_channel(channel)])


@dataclass(frozen=True)
class TokenTarget:
    """What a token acts on: a customer and channel, or nobody (a test send)."""

    channel: str
    #: None for a test token.
    customer: Customer | None

    @property
    def test(self) -> bool:
        return self.customer is None


def resolve_token(session: Session, token: str) -> TokenTarget:
    """The customer and channel a token acts on.

    ValidationError when the token is forged, altered or malformed; NotFound when
    the customer it was made for is gone (and was not merged into another).
    """
    for salt in (SALT, TEST_SALT, LEGACY_SALT):
        try:
            data = URLSafeSerializer(_secret(), salt=salt).loads(token)
        except BadSignature:
            continue
        if salt == SALT and _shaped(data, _is_text, _is_channel, _is_int):
            external, channel, made = data
            made_at = datetime.fromtimestamp(made / 1000, UTC)
            return TokenTarget(channel, _customer_then(session, external, made_at))
        if salt == TEST_SALT and _shaped(data, _is_channel):
            return TokenTarget(data[0], None)
        if salt == LEGACY_SALT and _shaped(data, _is_int, _is_channel):
            return TokenTarget(data[1], _legacy_customer(session, data[0]))
        raise ValidationError("token: invalid unsubscribe token", field="token")
    raise ValidationError("token: invalid or tampered unsubscribe token", field="token")


def _shaped(data: Any, *checks: Callable[[Any], bool]) -> bool:
    """``data`` is a list whose items pass ``checks``, one each."""
    return (
        isinstance(data, list)
        and len(data) == len(checks)
        and all(check(item) for check, item in zip(checks, data, strict=True))
    )


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_channel(value: Any) -> bool:
    return isinstance(value, str) and value in opt_out_channels()


def _customer_then(session: Session, external_id: str, made: datetime) -> Customer:
    """The customer known as ``external_id`` when a token was made at ``made``.

    ``made`` has whole milliseconds: a customer created within the millisecond after
    it counts.
    """
    customer = session.scalar(select(Customer).where(Customer.external_id == external_id))
    if customer is not None and customer.created_at < made + timedelta(milliseconds=1):
        return customer
    alias = session.scalar(
        select(CustomerAlias)
        .where(CustomerAlias.external_id == external_id, CustomerAlias.merged_at >= made)
        .order_by(CustomerAlias.merged_at, CustomerAlias.id)
        .limit(1)
    )
    merged_into = session.get(Customer, alias.customer_id) if alias is not None else None
    if merged_into is None:
        raise NotFound(f"customer: no customer {external_id!r}")
    return merged_into


def _legacy_customer(session: Session, internal_id: int) -> Customer:
    """The customer a pre-0.3 token (internal id) was made for, or merged into since."""
    cutoff_row = session.get(SchedulerState, LEGACY_CUTOFF)
    if cutoff_row is not None:
        cutoff = parse_datetime(cutoff_row.value, LEGACY_CUTOFF)
        customer = session.get(Customer, internal_id)
        if customer is not None and customer.created_at < cutoff:
            return customer
        alias = session.scalar(
            select(CustomerAlias)
            .where(CustomerAlias.source_id == internal_id, CustomerAlias.source_created_at < cutoff)
            .order_by(CustomerAlias.merged_at, CustomerAlias.id)
            .limit(1)
        )
        if alias is not None and (merged_into := session.get(Customer, alias.customer_id)):
            return merged_into
    raise NotFound(f"customer: no customer with internal id {internal_id}")


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
            removed = session.execute(
                delete(Unsubscription).where(
                    Unsubscription.customer_id == customer.id, Unsubscription.channel == channel
                )
            )
            changed = bool(cast(CursorResult, removed).rowcount)
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
            add_to_outbox(session, "evaluate", [customer.id], changes=Changes(channels=True))
    if changed and not subscribed:
        signals.customer_unsubscribed.send(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            customer=customer,
            channel=channel,
        )
    return customer
