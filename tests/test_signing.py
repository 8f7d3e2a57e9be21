"""Tokens signed with the key derived once (``messages.signing``) are the tokens
itsdangerous writes, and links built from a cached path are the links ``url_map``
builds: a message sent today reads like one sent before, and old links keep working."""

from __future__ import annotations

import pytest
from itsdangerous import URLSafeSerializer

from flask_engage.messages import links, signing, unsubscribe
from flask_engage.messages.urls import external_url

PAYLOADS = [
    [1],
    [2**62, "https://example.com/a?b=c&d=" + "x" * 500],  # long enough to be compressed
    ["42", "email", 1_764_430_000_000],
    ["ünïcode ✓", "email", 0],
    [7, "https://example.com/" + "ab" * 30],
]


@pytest.mark.parametrize("secret", ["test-secret", b"\x00bytes\xff secret"])
@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_token_is_the_one_itsdangerous_writes(secret, payload):
    serializer = URLSafeSerializer(secret, salt="some-salt")
    token = signing.dumps(secret, "some-salt", payload)
    assert token == serializer.dumps(payload)
    assert serializer.loads(token) == payload
    assert signing.dumps(secret, "other-salt", payload) != token


def test_tokens_follow_a_new_secret_key(app):
    before = links.make_token(links.OPEN, 5)
    app.config["SECRET_KEY"] = "rotated"
    after = links.make_token(links.OPEN, 5)
    assert before != after
    assert links.read_token(links.OPEN, after) == (5, None)
    with pytest.raises(Exception, match="invalid"):
        links.read_token(links.OPEN, before)


def test_unsubscribe_and_tracking_tokens_read_back(app):
    token = unsubscribe.make_token("ada", "email")
    assert URLSafeSerializer("test-secret", salt=unsubscribe.SALT).loads(token)[:2] == [
        "ada",
        "email",
    ]
    url = "https://example.com/page?x=1"
    assert links.read_token(links.CLICK, links.make_token(links.CLICK, 9, url)) == (9, url)


@pytest.mark.parametrize(
    "endpoint", ["engage.unsubscribe", "engage.email_open", "engage.email_click"]
)
def test_token_links_are_the_links_url_map_builds(app, endpoint):
    token = links.make_token(links.OPEN, 3)
    built = app.url_map.bind("localhost").build(endpoint, {"token": token})
    assert external_url(endpoint, token=token) == "https://app.example.com" + built
    # anything that is not a plain token is built (and escaped) by the URL map
    odd = "a b/ü"
    built = app.url_map.bind("localhost").build(endpoint, {"token": odd})
    assert external_url(endpoint, token=odd) == "https://app.example.com" + built
    # the base follows the configuration
    app.config["ENGAGE_BASE_URL"] = "https://news.example.org/"
    assert external_url(endpoint, token=token).startswith("https://news.example.org/engage/")
