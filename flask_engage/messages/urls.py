"""Absolute links in messages: from configuration, never from a request.

A message is built for one customer but often inside another person's request
(inline work after a commit, the inline schedule, an admin's preview). The
request's ``Host`` header is chosen by whoever sent it, so a link built from it
(``url_for(..., _external=True)``) could point a victim's unsubscribe link at an
attacker's site. Links use ``ENGAGE_BASE_URL``, else ``SERVER_NAME`` with
``PREFERRED_URL_SCHEME`` (and ``APPLICATION_ROOT``); with neither, building a link
fails with a :class:`~flask_engage.errors.ConfigurationError`, and the message
with it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app

from ..db import log
from ..errors import ConfigurationError

MISSING = (
    "ENGAGE_BASE_URL: set it (or SERVER_NAME) to the address of your site: links in"
    " messages are never built from a request's Host header"
)


def link_base(app: Flask) -> str | None:
    """The absolute base of links in messages, without a trailing slash (None: not set)."""
    base = app.config.get("ENGAGE_BASE_URL")
    if base:
        parts = urlsplit(str(base))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(
                f"ENGAGE_BASE_URL: expected an absolute http(s) URL, got {base!r}"
            )
        return str(base).rstrip("/")
    server = app.config.get("SERVER_NAME")
    if server:
        scheme = app.config.get("PREFERRED_URL_SCHEME") or "http"
        root = str(app.config.get("APPLICATION_ROOT") or "/").rstrip("/")
        return f"{scheme}://{server}{root}"
    return None


def check_link_base(app: Flask) -> None:
    """At start-up: refuse a malformed ``ENGAGE_BASE_URL``; warn when no base is set."""
    if link_base(app) is None:
        log.warning("flask-engage: %s; until then messages with links fail", MISSING)


def external_url(endpoint: str, **values: Any) -> str:
    """An absolute URL of ``endpoint`` for a message; ConfigurationError without a base."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    base = link_base(app)
    if base is None:
        raise ConfigurationError(MISSING)
    return base + app.url_map.bind("localhost").build(endpoint, values)
