"""HTTP: the ``engage`` blueprint (API, browser tracking, unsubscribe, push, inbox, v1).

Importing the route modules adds their routes to :data:`~.common.bp`.
"""

from __future__ import annotations

from flask import Flask

from . import api, inbox, openapi, push, unsubscribe, v1  # noqa: F401  (routes on import)
from .common import bp


def register_blueprints(app: Flask) -> None:
    """Mount the blueprint at ``ENGAGE_URL_PREFIX``."""
    app.register_blueprint(bp, url_prefix=app.config["ENGAGE_URL_PREFIX"])
    # A host using Flask-WTF's CSRFProtect: our POSTs are bearer-key API calls, signed
    # one-click unsubscribes (RFC 8058, no session) and same-origin JSON-only calls.
    csrf = app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(bp)
