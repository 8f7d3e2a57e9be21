"""A message rendered for one customer: the template context, the unsubscribe link.

Delivery, the admin's preview and test sends all compose messages here, so what
an admin previews is what a customer gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..channels import Channel
from ..models import Customer
from .templates import Rendered, render
from .unsubscribe import make_test_token, make_token
from .urls import external_url


@dataclass
class Composed:
    """A rendered message and what it was rendered with."""

    rendered: Rendered
    unsubscribe_url: str | None
    context: dict[str, Any]


def compose(
    customer: Customer, channel: Channel, subject: str | None, body: str, *, test: bool = False
) -> Composed:
    """Render ``subject`` and ``body`` for ``customer`` on ``channel``.

    ``test``: a test send (an admin's preview mailed to themselves): its unsubscribe
    link unsubscribes nobody, and its page says so. ``customer`` may then be unsaved.

    Raises :class:`~flask_engage.errors.InvalidTemplate` when a template fails for
    this customer's data, :class:`~flask_engage.errors.ConfigurationError` when
    links cannot be built (no ``ENGAGE_BASE_URL`` or ``SERVER_NAME``).
    """
    unsubscribe_url = None
    if channel.opt_out:
        token = (
            make_test_token(channel.name)
            if test
            else make_token(customer.external_id, channel.name)
        )
        unsubscribe_url = external_url("engage.unsubscribe", token=token)
    context = {"customer": customer.template_context(), "unsubscribe_url": unsubscribe_url}
    rendered = render(subject, body, context, html=channel.html_bodies)
    return Composed(rendered, unsubscribe_url, context)
