"""HTTP: the ``engage`` blueprint (API, browser tracking, unsubscribe, push, inbox)."""

from __future__ import annotations

from flask import Flask

from . import api, engagement, inbox, openapi, push, unsubscribe, v1  # noqa: F401  (their routes)
from .common import bp


def register_blueprints(app: Flask) -> None:
    """Mount the blueprint at ``ENGAGE_URL_PREFIX``."""
    app.register_blueprint(bp, url_prefix=app.config["ENGAGE_URL_PREFIX"])
    # A host using Flask-WTF's CSRFProtect: our POSTs are bearer-key API calls, signed
    # one-click unsubscribes (RFC 8058, no session) and same-origin JSON-only calls.
    csrf = app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(bp)
