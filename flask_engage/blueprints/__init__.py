"""HTTP: the ``engage`` blueprint (API, browser tracking, unsubscribe, push, inbox,
public list pages, Engage's v1 users and lists)."""

from __future__ import annotations

from flask import Flask

from . import (  # noqa: F401  (their routes)
    api,
    engagement,
    inbox,
    lists,
    openapi,
    push,
    unsubscribe,
    v1,
    v1_lists,
)
from .common import bp


def register_blueprints(app: Flask) -> None:
    """Mount the blueprint at ``ENGAGE_URL_PREFIX``."""
    app.register_blueprint(bp, url_prefix=app.config["ENGAGE_URL_PREFIX"])
    # A host using Flask-WTF's CSRFProtect: our POSTs are bearer-key API calls, signed
    # one-click unsubscribes (RFC 8058, no session), same-origin JSON-only calls and
    # public list sign-ups (forms embedded on other sites, by design).
    csrf = app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(bp)
