"""Customers: search by email, name or id; a customer's profile (attributes, segments,
lists, subscriptions, events, messages) and subscription changes."""

from __future__ import annotations

from typing import Any

from flask import flash, jsonify, request
from flask_admin import expose

from ..channels import opt_out_channels
from ..customers import (
    count_customers,
    customer_events,
    customer_segments,
    find_customers,
    search,
    subscriptions,
)
from ..db import host_session
from ..errors import EngageError, ValidationError
from ..lists.members import subscriptions_of
from ..lists.service import all_lists
from ..messages.audience import customer_messages
from ..models import Customer, Event, Message
from ..segments.browse import all_segments
from .base import BIG_ID, EngageView, engage, found_or_404
from .paging import MAX_SMALL_ID, id_arg, keyset
from .words import channel_label, who


def search_text() -> str:
    """The ``q`` query parameter, trimmed (at most 200 characters)."""
    return request.args.get("q", "").strip()[:200]


class CustomersView(EngageView):
    """Customers: search and keyset paging; a customer's data, events and messages."""

    @expose("/")
    def index(self) -> Any:
        session = host_session()
        q = search_text()
        segment_id = id_arg("segment", MAX_SMALL_ID)
        page = keyset(session, search(q, segment_id), Customer.id, cursor="before", descending=True)
        return self.render(
            "engage_admin/customers.html",
            page=page,
            q=q,
            segment_id=segment_id,
            segments=all_segments(session),
            total=count_customers(session),
        )

    @expose("/lookup")
    def lookup(self) -> Any:
        """Customers an email, a name or an id may mean, for pickers (JSON)."""
        found = find_customers(host_session(), search_text())
        return jsonify(
            customers=[
                {"id": c.id, "external_id": c.external_id, "email": c.email, "name": who(c)}
                for c in found
            ]
        )

    @expose(f"/<{BIG_ID}:customer_id>")
    def details(self, customer_id: int) -> Any:
        session = host_session()
        customer = found_or_404(Customer, customer_id)
        events = keyset(
            session, customer_events(customer.id), Event.id, cursor="before", descending=True
        )
        messages = keyset(
            session,
            customer_messages(customer.id),
            Message.id,
            cursor="messages_before",
            descending=True,
            scalars=False,
            key_of=lambda row: row[0].id,
        )
        on_lists = subscriptions_of(session, customer.id)
        subscribed_to = {found.id for found, status in on_lists if status == "subscribed"}
        return self.render(
            "engage_admin/customer.html",
            customer=customer,
            events=events,
            segments=customer_segments(session, customer.id),
            messages=messages,
            subscriptions=[
                (channel, channel_label(channel), subscribed)
                for channel, subscribed in subscriptions(session, customer.id).items()
            ],
            lists=on_lists,
            open_lists=[found for found in all_lists(session) if found.id not in subscribed_to],
            erasure=erasure_words(engage().forget_preview(customer.external_id) or {}),
        )

    @expose(f"/<{BIG_ID}:customer_id>/subscription", methods=("POST",))
    def subscription(self, customer_id: int) -> Any:
        """Subscribe or unsubscribe the customer on one channel (confirmed in the page)."""
        customer = found_or_404(Customer, customer_id)
        channel = request.form.get("channel", "")
        subscribe = request.form.get("subscribed") == "1"
        try:
            if channel not in opt_out_channels():
                raise ValidationError(
                    f"channel: {channel[:40]!r} is not a channel customers subscribe to",
                    field="channel",
                )
            if subscribe:
                engage().resubscribe(customer.external_id, channel)
            else:
                engage().unsubscribe(customer.external_id, channel)
        except EngageError as exc:
            return self.failed(exc, "details", customer_id=customer.id)
        state = "subscribed to" if subscribe else "unsubscribed from"
        flash(f"{who(customer)} is now {state} {channel_label(channel).lower()}.", "success")
        return self.back("details", customer_id=customer.id)

    @expose(f"/<{BIG_ID}:customer_id>/forget", methods=("POST",))
    def forget(self, customer_id: int) -> Any:
        """Erase the customer (``engage.forget``), after the page's confirmation."""
        customer = found_or_404(Customer, customer_id)
        name = who(customer)
        try:
            engage().forget(customer.external_id)
            host_session().commit()
        except EngageError as exc:
            host_session().rollback()
            return self.failed(exc, "details", customer_id=customer.id)
        flash(f"{name} was forgotten: their data is erased.", "success")
        return self.back("index")


def erasure_words(erasure: dict[str, int]) -> str:
    """What forgetting erases, in a sentence for the confirmation."""
    parts = [
        f"{erasure.get(key, 0)} {label}"
        for key, label in (
            ("events", "event(s)"),
            ("memberships", "segment membership(s)"),
            ("subscriptions", "unsubscribe setting(s)"),
            ("runs", "automation run(s)"),
            ("push_subscriptions", "push subscription(s)"),
        )
    ]
    kept = erasure.get("messages", 0)
    return (
        f"This erases the customer with their attributes, {', '.join(parts)}."
        f" Their {kept} message(s) stay in the counts, without any of their content."
        " This cannot be undone."
    )
