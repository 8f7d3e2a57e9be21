"""Typed errors raised by flask-engage.

Every error a caller can cause derives from :class:`EngageError`, and its message
names what was wrong (a field, a filter path, a step).
"""

from __future__ import annotations


class EngageError(Exception):
    """Base class of every error flask-engage raises on purpose."""


class ValidationError(EngageError, ValueError):
    """Input that does not have the expected shape; ``field`` names where."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidFilter(ValidationError):
    """A segment filter is malformed; the message starts with the node's path."""


class InvalidTemplate(ValidationError):
    """A subject or body template does not compile or render."""


class InvalidAutomation(ValidationError):
    """An automation's trigger or steps are malformed; the message names the step."""


class NotFound(EngageError, LookupError):
    """A customer, segment, broadcast or automation does not exist."""


class ConfigurationError(EngageError):
    """The app is missing configuration a feature needs (VAPID keys, base URL...)."""


class StateError(EngageError):
    """The operation is not allowed in the object's current state."""


class UnsafeAddress(ValidationError):
    """A URL Engage would send to is not an allowed public (https) address; names the field."""
