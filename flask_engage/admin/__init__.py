"""The admin panel (Flask-Admin)."""

from __future__ import annotations

from flask import Flask


def init_admin(app: Flask) -> None:
    """Mount Engage's admin views."""
