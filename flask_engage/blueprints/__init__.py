"""HTTP: the ``engage`` blueprint (API, browser tracking, unsubscribe, push, inbox)."""

from __future__ import annotations

from flask import Flask

from .common import bp


def register_blueprints(app: Flask) -> None:
    """Mount the blueprint at ``ENGAGE_URL_PREFIX``."""
    from . import api, inbox, openapi, push, unsubscribe, v1  # noqa: F401  (routes register on import)

    app.register_blueprint(bp, url_prefix=app.config["ENGAGE_URL_PREFIX"])
