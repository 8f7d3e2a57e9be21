"""``flask engage seed-demo`` and ``flask engage import`` (attached to the engage group)."""

from __future__ import annotations

from .cli import engage_cli  # noqa: F401
