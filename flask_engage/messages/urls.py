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

import re
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit
from weakref import WeakKeyDictionary

from flask import Flask, current_app

from ..db import log
from ..errors import ConfigurationError

MISSING = (
    "ENGAGE_BASE_URL: set it (or SERVER_NAME) to the address of your site: links in"
    " messages are never built from a request's Host header"
)


def link_base(app: Flask) -> str | None:
    """The absolute base of links in messages, without a trailing slash (None: not set)."""
    config = app.config
    return _base(
        config.get("ENGAGE_BASE_URL"),
        config.get("SERVER_NAME"),
        config.get("PREFERRED_URL_SCHEME"),
        config.get("APPLICATION_ROOT"),
    )


@lru_cache(maxsize=16)
def _base(base: Any, server: Any, scheme: Any, root: Any) -> str | None:
    if base:
        parts = urlsplit(str(base))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(
                f"ENGAGE_BASE_URL: expected an absolute http(s) URL, got {base!r}"
            )
        return str(base).rstrip("/")
    if server:
        root = str(root or "/").rstrip("/")
        return f"{scheme or 'http'}://{server}{root}"
    return None


def check_link_base(app: Flask) -> None:
    """At start-up: refuse a malformed ``ENGAGE_BASE_URL``; warn when no base is set."""
    if link_base(app) is None:
        log.warning("flask-engage: %s; until then messages with links fail", MISSING)


#: A token that URL building writes as it is (itsdangerous tokens: base64url and dots).
_PLAIN_TOKEN = re.compile(r"[A-Za-z0-9_.-]+")
_PLACEHOLDER = "engage0token0placeholder"
#: Per app: an endpoint's path before and after its token (``/unsubscribe/``, ``""``).
_token_paths: WeakKeyDictionary[Flask, dict[str, tuple[str, str] | None]] = WeakKeyDictionary()


def external_url(endpoint: str, **values: Any) -> str:
    """An absolute URL of ``endpoint`` for a message; ConfigurationError without a base.

    A message carries several token links (unsubscribe, open pixel, clicks): for a
    plain ``token`` the path is built once per endpoint, then the token put in it.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    base = link_base(app)
    if base is None:
        raise ConfigurationError(MISSING)
    token = values.get("token")
    if len(values) == 1 and isinstance(token, str) and _PLAIN_TOKEN.fullmatch(token):
        paths = _token_paths.setdefault(app, {})
        if endpoint not in paths:
            path = app.url_map.bind("localhost").build(endpoint, {"token": _PLACEHOLDER})
            before, found, after = path.partition(_PLACEHOLDER)
            paths[endpoint] = (before, after) if found and _PLACEHOLDER not in after else None
        around = paths[endpoint]
        if around is not None:
            return base + around[0] + token + around[1]
    return base + app.url_map.bind("localhost").build(endpoint, values)
