"""Messages: templates, broadcasts, delivery over email, web push and in-app."""

from __future__ import annotations

from ..errors import EngageError


class SkipMessage(EngageError):
    """A message is not sent, for a reason that is not a failure (the message says why)."""
