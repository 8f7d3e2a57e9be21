"""In-app messages: stored on the message row, read by the browser through the inbox."""

from __future__ import annotations

from .templates import Rendered


def send(rendered: Rendered) -> None:
    """Nothing leaves the server: a sent in-app message is in the customer's inbox."""
    if not rendered.text.strip() and not (rendered.html or "").strip():
        raise ValueError("in-app message is empty")
