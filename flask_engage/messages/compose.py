"""A message rendered for one customer: the template context, the unsubscribe link.

Delivery, the admin's preview and test sends all compose messages here, so what
an admin previews is what a customer gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..channels import Channel
from ..lists.optin import unsubscribe_url as list_unsubscribe_url
from ..models import Customer, CustomerList
from .links import track
from .templates import Rendered, render
from .unsubscribe import make_test_token, make_token
from .urls import external_url


@dataclass
class Composed:
    """A rendered message and what it was rendered with."""

    rendered: Rendered
    unsubscribe_url: str | None
    context: dict[str, Any]
    #: Where the channel's client reports a click (push), when tracked.
    report_url: str | None = None


def compose(
    customer: Customer,
    channel: Channel,
    subject: str | None,
    body: str,
    *,
    test: bool = False,
    message_id: int | None = None,
    unsubscribe_list: CustomerList | None = None,
) -> Composed:
    """Render ``subject`` and ``body`` for ``customer`` on ``channel``.

    ``test``: a test send (an admin's preview mailed to themselves): its unsubscribe
    link unsubscribes nobody, and its page says so. ``customer`` may then be unsaved.
    ``message_id``: the message being delivered; its opens and clicks are tracked
    (:mod:`.links`). Previews and test sends, which have none, are not.
    ``unsubscribe_list``: the list the message goes to (a broadcast to one list):
    its unsubscribe link (``unsubscribe_url``, the ``List-Unsubscribe`` header) takes
    the customer off that list; ``unsubscribe_all_url`` leaves the whole channel.

    Raises :class:`~flask_engage.errors.InvalidTemplate` when a template fails for
    this customer's data, :class:`~flask_engage.errors.ConfigurationError` when
    links cannot be built (no ``ENGAGE_BASE_URL`` or ``SERVER_NAME``).
    """
    unsubscribe_url = channel_url = None
    if channel.opt_out:
        token = (
            make_test_token(channel.name)
            if test
            else make_token(customer.external_id, channel.name)
        )
        unsubscribe_url = channel_url = external_url("engage.unsubscribe", token=token)
        if unsubscribe_list is not None and not test:
            unsubscribe_url = list_unsubscribe_url(unsubscribe_list, customer.id)
    context = {
        "customer": customer.template_context(),
        "unsubscribe_url": unsubscribe_url,
        "unsubscribe_all_url": channel_url,
    }
    rendered = render(subject, body, context, html=channel.html_bodies)
    report_url = None
    if message_id is not None:
        untracked = [url for url in (unsubscribe_url, channel_url) if url]
        rendered, report_url = track(channel, rendered, message_id, untracked)
    return Composed(rendered, unsubscribe_url, context, report_url)
