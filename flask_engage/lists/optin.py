"""Subscribing from outside: the public sign-up, double opt-in, signed list links.

A sign-up gives an email address (and maybe a name). The person is the customer with
that address, or a new customer whose host id is the address in lower case. On a
list without double opt-in they are subscribed at once. On a double opt-in list they
are ``pending`` until they open the signed confirmation link emailed to them (valid
for :data:`CONFIRM_MAX_AGE`); someone who is not a customer yet is kept as a pending
sign-up (address and form fields) and becomes a customer only when they confirm, so
an address typed by someone else leaves no customer behind. The form never changes
what a known customer's attributes say.

Confirmation emails go out through the outbox (``confirm_list`` task), after the
sign-up has committed, with retries while the mail server is down; at most one per
member every :data:`RESEND_AFTER`. A per-list unsubscribe link (signed, no expiry)
takes someone off one list and leaves their channel subscriptions alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from flask import current_app, render_template
from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..channels.email import MailMessage, sender
from ..errors import ConfigurationError, StateError, ValidationError
from ..messages import signing
from ..messages.urls import external_url
from ..models import (
    Customer,
    CustomerAlias,
    CustomerList,
    ListMember,
    ListMemberStatus,
    OutboxTask,
    utcnow,
)
from ..outbox import add_to_outbox
from ..tracking import CustomerPatch
from .members import ensure_customers, subscribe, unsubscribe

CONFIRM_SALT = "flask-engage-list-confirm"
UNSUBSCRIBE_SALT = "flask-engage-list-unsubscribe"
#: How long a confirmation link works.
CONFIRM_MAX_AGE = timedelta(days=7)
#: A pending member asking again gets another confirmation email after this long.
RESEND_AFTER = timedelta(hours=1)


def _secret() -> str:
    secret = current_app.config.get("SECRET_KEY")
    if not secret:
        raise ConfigurationError("SECRET_KEY must be set to sign list links")
    return secret


# -- tokens and links ----------------------------------------------------------------------
def confirm_token(member: ListMember) -> str:
    """A signed, dated token confirming one pending member."""
    return URLSafeTimedSerializer(_secret(), salt=CONFIRM_SALT).dumps([member.id, member.list_id])


def read_confirm_token(token: str) -> tuple[int, int]:
    """(member id, list id) of a confirmation token; ValidationError when it was
    altered or is older than :data:`CONFIRM_MAX_AGE`."""
    serializer = URLSafeTimedSerializer(_secret(), salt=CONFIRM_SALT)
    try:
        data = serializer.loads(token, max_age=int(CONFIRM_MAX_AGE.total_seconds()))
    except SignatureExpired:
        raise ValidationError("token: this confirmation link has expired", field="token") from None
    except BadSignature:
        raise ValidationError(
            "token: invalid or tampered confirmation link", field="token"
        ) from None
    return _pair(data)


def unsubscribe_token(list_id: int, customer_id: int) -> str:
    """A signed token taking one customer (Engage's id) off one list; it does not expire."""
    return signing.dumps(_secret(), UNSUBSCRIBE_SALT, [list_id, customer_id])


def read_unsubscribe_token(token: str) -> tuple[int, int]:
    """(list id, customer id) of a list unsubscribe token; ValidationError if altered."""
    try:
        data = URLSafeSerializer(_secret(), salt=UNSUBSCRIBE_SALT).loads(token)
    except BadSignature:
        raise ValidationError(
            "token: invalid or tampered unsubscribe link", field="token"
        ) from None
    return _pair(data)


def _pair(data: Any) -> tuple[int, int]:
    if (
        not isinstance(data, list)
        or len(data) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and 0 < n < 2**63 for n in data)
    ):
        raise ValidationError("token: invalid link", field="token")
    return data[0], data[1]


def form_url(found: CustomerList) -> str:
    """The list's public subscribe page (also the form's ``action``)."""
    return external_url("engage.list_subscribe", slug=found.slug)


def confirm_url(found: CustomerList, member: ListMember) -> str:
    """The confirmation link of a pending member."""
    return external_url("engage.list_confirm", slug=found.slug, token=confirm_token(member))


def unsubscribe_url(found: CustomerList, customer_id: int) -> str:
    """A customer's (Engage's id) link to leave one list."""
    return external_url(
        "engage.list_unsubscribe", slug=found.slug, token=unsubscribe_token(found.id, customer_id)
    )


def form_snippet(found: CustomerList) -> Markup:
    """An HTML form to paste into any page (the host's or another site): it posts to
    the list's public subscribe endpoint."""
    return Markup(
        '<form method="post" action="{action}" accept-charset="utf-8">\n'
        '  <label>Email <input type="email" name="email" required maxlength="320"></label>\n'
        '  <label>First name <input type="text" name="first_name" maxlength="200"></label>\n'
        '  <button type="submit">Subscribe to {name}</button>\n'
        "</form>"
    ).format(action=form_url(found), name=found.name)


# -- signing up and confirming ---------------------------------------------------------------
def find_by_email(session: Session, email: str) -> Customer | None:
    """The customer with this address (exactly, or in lower case), active ones and then
    the oldest first."""
    return session.scalar(
        select(Customer)
        .where(Customer.email.in_({email, email.lower()}))
        .order_by(Customer.deleted_at.is_not(None), Customer.id)
        .limit(1)
    )


def _customer_id(session: Session, email: str, attributes: Mapping[str, Any]) -> int:
    """The customer with this address, or a new one (host id: the address in lower case)."""
    found = find_by_email(session, email)
    if found is not None:
        return found.id
    key = email.lower()
    return ensure_customers(
        session, {key: CustomerPatch(email=email, attributes=dict(attributes))}
    )[key]


def _ask_confirmation(session: Session, member: ListMember, now: datetime, again: bool) -> None:
    """Queue a confirmation email, unless one went out less than :data:`RESEND_AFTER` ago."""
    recent = member.confirm_sent_at is not None and member.confirm_sent_at > now - RESEND_AFTER
    if recent and not again:
        return
    member.confirm_sent_at = now
    member.updated_at = now
    session.flush()
    add_to_outbox(session, OutboxTask.CONFIRM_LIST, [member.id])


def signup(
    session: Session,
    found: CustomerList,
    email: str,
    attributes: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> str:
    """Subscribe an address from the public form; returns the member's status
    (``subscribed``, or ``pending`` on a double opt-in list until confirmed).

    ``attributes`` (checked by the caller) are given to a customer this creates only.
    """
    now = now or utcnow()
    if found.archived_at is not None:
        raise StateError(f"list: {found.name!r} is archived and takes no new subscribers")
    attributes = attributes or {}
    if not found.double_optin:
        subscribe(session, found.id, [_customer_id(session, email, attributes)], now)
        return ListMemberStatus.SUBSCRIBED
    customer = find_by_email(session, email)
    if customer is None:
        member = session.scalar(
            select(ListMember).where(
                ListMember.list_id == found.id,
                ListMember.customer_id.is_(None),
                ListMember.email == email.lower(),
            )
        )
        if member is None:
            member = ListMember(
                list_id=found.id,
                email=email.lower(),
                attributes=dict(attributes),
                status=ListMemberStatus.PENDING,
                created_at=now,
            )
            session.add(member)
        _ask_confirmation(session, member, now, again=False)
        return ListMemberStatus.PENDING
    member = session.scalar(
        select(ListMember).where(
            ListMember.list_id == found.id, ListMember.customer_id == customer.id
        )
    )
    if member is not None and member.status == ListMemberStatus.SUBSCRIBED:
        return ListMemberStatus.SUBSCRIBED
    again = member is None or member.status == ListMemberStatus.UNSUBSCRIBED
    if member is None:
        member = ListMember(list_id=found.id, customer_id=customer.id, created_at=now)
        session.add(member)
    member.status = ListMemberStatus.PENDING
    _ask_confirmation(session, member, now, again=again)
    return ListMemberStatus.PENDING


def confirm(session: Session, token: str, now: datetime | None = None) -> CustomerList:
    """Subscribe the pending member of a confirmation link; returns the list.

    ValidationError for an altered, expired or spent link; a member already
    subscribed confirms again harmlessly.
    """
    now = now or utcnow()
    member_id, list_id = read_confirm_token(token)
    member = session.get(ListMember, member_id)
    found = session.get(CustomerList, list_id)
    if member is None or found is None or member.list_id != list_id:
        raise ValidationError("token: this confirmation link is no longer valid", field="token")
    if member.status == ListMemberStatus.SUBSCRIBED:
        return found
    if member.status != ListMemberStatus.PENDING:
        raise ValidationError("token: this confirmation link is no longer valid", field="token")
    if found.archived_at is not None:
        raise StateError(f"list: {found.name!r} is archived and takes no new subscribers")
    customer_id = member.customer_id
    if customer_id is None:  # a sign-up of someone who was not a customer
        assert member.email is not None
        customer_id = _customer_id(session, member.email, member.attributes or {})
        taken = session.scalar(
            select(ListMember.id).where(
                ListMember.list_id == list_id, ListMember.customer_id == customer_id
            )
        )
        if taken is None:
            member.customer_id, member.email, member.attributes = customer_id, None, None
        else:
            session.delete(member)
        session.flush()
    subscribe(session, list_id, [customer_id], now)
    return found


def leave(session: Session, token: str, now: datetime | None = None) -> CustomerList | None:
    """Unsubscribe the customer of a list unsubscribe link from that list alone (or,
    when they were merged into another customer since, that customer: internal ids
    are never reused). None when there is nothing to leave any more: the list was
    deleted, or the customer forgotten (the link stays a valid way to say no)."""
    list_id, made_for = read_unsubscribe_token(token)
    found = session.get(CustomerList, list_id)
    customer_id: int | None = made_for
    if session.get(Customer, made_for) is None:
        customer_id = session.scalar(
            select(CustomerAlias.customer_id)
            .where(CustomerAlias.source_id == made_for)
            .order_by(CustomerAlias.id.desc())
            .limit(1)
        )
    if found is None or customer_id is None:
        return None
    unsubscribe(session, list_id, [customer_id], now)
    return found


# -- the confirmation email ------------------------------------------------------------------
def send_confirmations(session: Session, member_ids: list[int], now: datetime) -> int:
    """Email the confirmation link to each member still pending; returns how many.

    The mail server is connected to first: when it is down, this raises before
    anything is sent and the outbox retries later.
    """
    rows = session.execute(
        select(ListMember, CustomerList, Customer.email)
        .join(CustomerList, CustomerList.id == ListMember.list_id)
        .outerjoin(Customer, Customer.id == ListMember.customer_id)
        .where(ListMember.id.in_(member_ids), ListMember.status == ListMemberStatus.PENDING)
        .order_by(ListMember.id)
    ).all()
    messages = []
    for member, found, customer_email in rows:
        address = customer_email or member.email
        if not address:
            continue
        context = {"list": found, "confirm_url": confirm_url(found, member)}
        messages.append(
            MailMessage(
                subject=f"Confirm your subscription to {found.name}",
                recipients=[address],
                body=render_template("engage/list_confirm_email.txt", **context),
                html=render_template("engage/list_confirm_email.html", **context),
                sender=sender(),
            )
        )
    if messages:
        with current_app.extensions["mail"].connect() as connection:
            for message in messages:
                connection.send(message)
    return len(messages)
