"""In-app messages: stored on the message row, read by the browser through the inbox."""

from __future__ import annotations

from ..models import Customer
from .templates import Rendered


def send(customer: Customer, rendered: Rendered) -> None:
    """Nothing leaves the server: a sent in-app message is in the customer's inbox."""
    if not rendered.text and not rendered.html:
        raise ValueError("in-app message is empty")
