"""In-app messages: stored on the message row, read by the browser through the inbox."""

from __future__ import annotations

from typing import Any

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
