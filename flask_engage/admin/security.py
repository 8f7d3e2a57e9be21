"""Who may use the admin, where refused visitors go, and the CSRF token of every POST."""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import urlencode

from flask import current_app, jsonify, redirect, request, session, url_for
from werkzeug.exceptions import abort
from werkzeug.routing import BuildError
from werkzeug.wrappers import Response

try:  # optional: Flask-Login tells who is signed in
    from flask_login import current_user
except ImportError:  # pragma: no cover - Flask-Login is not installed
    current_user = None

SESSION_KEY = "_engage_admin_csrf"
FORM_FIELD = "csrf_token"
HEADER = "X-CSRFToken"


def is_allowed() -> bool:
    """``ENGAGE_ADMIN_ACCESS()``; without it, only in debug or testing mode."""
    check = current_app.config.get("ENGAGE_ADMIN_ACCESS")
    if check is None:
        return bool(current_app.debug or current_app.testing)
    return bool(check())


def csrf_token() -> str:
    """The session's admin CSRF token (created on first use)."""
    token = session.get(SESSION_KEY)
    if not token:
        token = secrets.token_urlsafe(32)
        session[SESSION_KEY] = token
    return token


def csrf_valid() -> bool:
    """True when the request carries the session's token (form field or header)."""
    expected = session.get(SESSION_KEY)
    given = request.headers.get(HEADER) or request.form.get(FORM_FIELD)
    return bool(expected and given and hmac.compare_digest(str(expected), str(given)))


def wants_json() -> bool:
    """The client asked for JSON (the admin's AJAX endpoints) rather than a page."""
    return request.is_json or request.accept_mimetypes.best == "application/json"


def login_url() -> str | None:
    """The host's login page: ``ENGAGE_ADMIN_LOGIN_URL`` (a URL or an endpoint), else
    Flask-Login's ``login_view``; None when the host has neither."""
    target = current_app.config.get("ENGAGE_ADMIN_LOGIN_URL")
    if not target:
        manager: Any = getattr(current_app, "login_manager", None)
        target = getattr(manager, "login_view", None)
    if not target:
        return None
    if "/" in target:
        return str(target)
    try:
        return url_for(target)
    except BuildError:
        return None


def is_anonymous() -> bool:
    """Nobody is signed in: Flask-Login's ``current_user`` when the host uses it, else
    ``ENGAGE_IDENTITY`` (the current customer)."""
    if current_user is not None and getattr(current_app, "login_manager", None) is not None:
        return not bool(current_user.is_authenticated)
    return current_app.extensions["engage"].current_identity() is None


def refuse() -> Response:
    """Answer a visitor the admin is closed to.

    A page asked for by a visitor who is not signed in goes to the host's login page
    (with ``next``); signed-in visitors without access and every AJAX or POST
    request get 403.
    """
    if wants_json():
        response = jsonify(error="access: you may not use the Engage admin")
        response.status_code = 403
        return response
    target = login_url() if request.method == "GET" else None
    if target and is_anonymous():
        sep = "&" if "?" in target else "?"
        return redirect(f"{target}{sep}{urlencode({'next': request.full_path.rstrip('?')})}")
    abort(403)
