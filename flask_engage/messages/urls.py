"""Absolute links in messages, also from workers that have no request."""

from __future__ import annotations

from typing import Any

from flask import current_app, has_request_context, url_for

from ..db import log

_warned: set[int] = set()


def external_url(endpoint: str, **values: Any) -> str:
    """An absolute URL: ``ENGAGE_BASE_URL``, else the request, else ``SERVER_NAME``."""
    app = current_app._get_current_object()
    base = app.config.get("ENGAGE_BASE_URL")
    if not base and has_request_context():
        return url_for(endpoint, _external=True, **values)
    if not base and app.config.get("SERVER_NAME"):
        base = f"{app.config.get('PREFERRED_URL_SCHEME') or 'http'}://{app.config['SERVER_NAME']}"
    if not base:
        base = "http://localhost"
        if id(app) not in _warned:
            _warned.add(id(app))
            log.warning("flask-engage: set ENGAGE_BASE_URL so links in messages point at your site")
    path = app.url_map.bind("localhost").build(endpoint, values)
    return base.rstrip("/") + path
