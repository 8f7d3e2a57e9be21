"""Signed engagement links: the open pixel, click redirects, push click reports.

A token carries a message id (and, for a click, the original URL), signed with the
app's ``SECRET_KEY`` (itsdangerous) under a salt of its own kind, so a token can be
neither altered nor used as another kind. Like unsubscribe links they do not
expire: an email opened a year later still works.

:func:`track` applies them to a message rendered for delivery (never to previews
or test sends, which have no message): an email's ``http(s)`` links, in its HTML
and its text, go through click URLs and its HTML gets an open pixel; a push
notification gets the URL its service worker reports a click to. Unsubscribe links
are never rewritten.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from flask import current_app
from itsdangerous import BadData, URLSafeSerializer

from ..channels import Channel
from ..errors import ConfigurationError, ValidationError
from . import signing
from .templates import Rendered
from .urls import external_url

#: Token kinds, each signed with a salt of its own.
OPEN, CLICK, PUSH = "open", "click", "push"
_SALTS = {
    OPEN: "flask-engage-open",
    CLICK: "flask-engage-click",
    PUSH: "flask-engage-push-click",
}
#: Links longer than this stay as they are (their token would not fit in a URL).
MAX_URL = 2000
#: Longer tokens are refused before any decoding.
MAX_TOKEN = 4096
_MAX_ID = 2**63 - 1

_ANCHOR_HREF = re.compile(r"""(<a\b[^>]*?\shref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_TEXT_URL = re.compile(r"""https?://[^\s<>"'()\[\]{}]+""", re.IGNORECASE)
_TRAILING = ".,;:!?"
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_BLANK = re.compile(r"[\x00-\x20\x7f]")


def _secret() -> str | bytes:
    secret = current_app.config.get("SECRET_KEY")
    if not secret:
        raise ConfigurationError("SECRET_KEY must be set to sign tracking links")
    return secret


def _serializer(kind: str) -> URLSafeSerializer:
    return URLSafeSerializer(_secret(), salt=_SALTS[kind])


def make_token(kind: str, message_id: int, url: str | None = None) -> str:
    """A signed token for one message (and, for a click, its destination)."""
    payload: list[Any] = [message_id] if url is None else [message_id, url]
    return signing.dumps(_secret(), _SALTS[kind], payload)


def read_token(kind: str, token: str) -> tuple[int, str | None]:
    """(message id, URL or None) of a token; ValidationError naming ``token`` when it
    is forged, altered, of another kind or malformed."""
    invalid = ValidationError("token: invalid or tampered link", field="token")
    if not isinstance(token, str) or len(token) > MAX_TOKEN:
        raise invalid
    try:
        data = _serializer(kind).loads(token)
    except (BadData, ValueError):  # a bad signature, payload or encoding
        raise invalid from None
    size = 2 if kind == CLICK else 1
    if not isinstance(data, list) or len(data) != size:
        raise invalid
    message_id = data[0]
    if isinstance(message_id, bool) or not isinstance(message_id, int):
        raise invalid
    if not 0 < message_id <= _MAX_ID:
        raise invalid
    if kind != CLICK:
        return message_id, None
    url = data[1]
    if not isinstance(url, str) or not is_web_link(url):
        raise invalid
    return message_id, url


def is_web_link(url: str) -> bool:
    """An absolute ``http(s)`` URL, without blanks or control characters, short enough
    to be tracked."""
    return (
        len(url) <= MAX_URL
        and url[:8].lower().startswith(("http://", "https://"))
        and not _BLANK.search(url)
    )


class _Rewriter:
    """Click URLs of one message, one token per distinct link."""

    def __init__(self, message_id: int, unsubscribe_urls: Sequence[str]) -> None:
        self.message_id = message_id
        self.unsubscribe_prefixes = tuple(url.rsplit("/", 1)[0] + "/" for url in unsubscribe_urls)
        self.urls: dict[str, str] = {}

    def tracked(self, url: str) -> str | None:
        """The click URL for ``url``; None for links that stay as they are."""
        if not is_web_link(url):
            return None
        if self.unsubscribe_prefixes and url.startswith(self.unsubscribe_prefixes):
            return None
        if url not in self.urls:
            token = make_token(CLICK, self.message_id, url)
            self.urls[url] = external_url("engage.email_click", token=token)
        return self.urls[url]

    def html(self, markup: str) -> str:
        def swap(match: re.Match[str]) -> str:
            tracked = self.tracked(html.unescape(match.group(3)).strip())
            if tracked is None:
                return match.group(0)
            return f'{match.group(1)}"{html.escape(tracked)}"'

        return _ANCHOR_HREF.sub(swap, markup)

    def text(self, text: str) -> str:
        def swap(match: re.Match[str]) -> str:
            url = match.group(0)
            kept = url.rstrip(_TRAILING)
            tracked = self.tracked(kept)
            return match.group(0) if tracked is None else tracked + url[len(kept) :]

        return _TEXT_URL.sub(swap, text)


def pixel(markup: str, message_id: int) -> str:
    """``markup`` with an open pixel at the end of its body."""
    src = html.escape(external_url("engage.email_open", token=make_token(OPEN, message_id)))
    tag = (
        f'<img src="{src}" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0">'
    )
    ends = list(_BODY_END.finditer(markup))
    if not ends:
        return markup + tag
    at = ends[-1].start()
    return markup[:at] + tag + markup[at:]


def track(
    channel: Channel, rendered: Rendered, message_id: int, unsubscribe_urls: Sequence[str] = ()
) -> tuple[Rendered, str | None]:
    """A message as delivered with tracking, and the URL its client reports a click to.
    Unsubscribe links (``unsubscribe_urls`` and any with their prefix) are not tracked.

    What applies depends on the channel (``Channel.tracking``) and on
    ``ENGAGE_TRACK_OPENS`` / ``ENGAGE_TRACK_CLICKS``.
    """
    config = current_app.config
    if channel.tracking == "links":
        text, markup = rendered.text, rendered.html
        if config["ENGAGE_TRACK_CLICKS"]:
            rewriter = _Rewriter(message_id, unsubscribe_urls)
            text = rewriter.text(text)
            markup = None if markup is None else rewriter.html(markup)
        if config["ENGAGE_TRACK_OPENS"] and markup is not None:
            markup = pixel(markup, message_id)
        return replace(rendered, text=text, html=markup), None
    if channel.tracking == "report" and config["ENGAGE_TRACK_CLICKS"]:
        return rendered, external_url("engage.push_clicked", token=make_token(PUSH, message_id))
    return rendered, None
