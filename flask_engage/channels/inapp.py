"""In-app messages: stored on the message row, read by the browser through the inbox.

A stored in-app message's ``body`` is always HTML in which customer data is
escaped: an HTML template's autoescaped output, or a plain-text template's output
escaped as a whole (``Hi <b>`` is stored as ``Hi &lt;b&gt;``). The inbox serves it as
``body`` (safe to insert as HTML) beside ``text`` and ``subject`` (plain text: insert
them as text, never as HTML).
"""

from __future__ import annotations

from typing import Any

from markupsafe import escape

from .base import Channel, Outgoing


class InAppChannel(Channel):
    """Nothing leaves the server: a sent in-app message is in the customer's inbox."""

    name = "in_app"
    label = "In-app"
    engagement = {"read": "In-app read"}

    def send(self, outgoing: Outgoing, connection: Any) -> None:
        rendered = outgoing.rendered
        if not rendered.text.strip() and not (rendered.html or "").strip():
            raise ValueError("in-app message is empty")
        if rendered.html is None:  # plain text: stored as HTML like every in-app body
            outgoing.message.body = str(escape(rendered.text))
