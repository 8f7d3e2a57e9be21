"""Who may use the admin, and the CSRF token every admin POST must carry."""

from __future__ import annotations

import hmac
import secrets

from flask import current_app, request, session

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
