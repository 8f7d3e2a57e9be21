"""Hostile input to the tracking endpoints: forged, random and oversized tokens, signed
payloads of the wrong shape, odd user agents. Nothing answers 500, a refusal never
redirects, and nothing is recorded for it."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeSerializer
from sqlalchemy import func, select

from flask_engage.messages.links import CLICK, OPEN, make_token
from flask_engage.models import Event, Message
from tests.hostapp import db, engage

FUZZ = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
ENDPOINTS = [("get", "/engage/click/"), ("get", "/engage/open/"), ("post", "/engage/push/clicked/")]
NASTY = ["", ".", "..", "%00", "\x00", "\ud800", "'; DROP TABLE engage_events;--", "é", "🙂"]


def engagement_events() -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(Event)) or 0


def check(response) -> None:
    assert response.status_code < 500, response.data[:300]
    if response.status_code >= 400:
        assert "Location" not in response.headers
        if response.status_code != 404:  # 404: no route for an empty token or a "/"
            assert response.get_json()["error"]


@pytest.fixture
def sent_message(app):
    """The id of a sent email."""
    engage.identify("ann", email="ann@example.com")
    db.session.commit()
    broadcast = engage.create_broadcast(
        "News",
        channel="email",
        segments=["all"],
        subject="News",
        body='<a href="https://example.com/a">a</a>',
    )
    engage.send_broadcast(broadcast)
    return db.session.scalar(select(Message.id))


@FUZZ
@given(token=st.text(max_size=300) | st.sampled_from(NASTY))
def test_random_tokens_are_400_and_record_nothing(app, client, token):
    before = engagement_events()
    quoted = quote(token, safe="", errors="surrogatepass")
    for method, prefix in ENDPOINTS:
        response = getattr(client, method)(prefix + quoted)
        check(response)
        if token and "/" not in token:
            assert response.status_code in (400, 404), (prefix, token)
    assert engagement_events() == before


@FUZZ
@given(
    payload=st.recursive(
        st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=40),
        lambda children: st.lists(children, max_size=3),
        max_leaves=6,
    ),
    salt=st.sampled_from(["flask-engage-open", "flask-engage-click", "flask-engage-push-click"]),
)
def test_signed_payloads_of_the_wrong_shape_are_400(app, client, sent_message, payload, salt):
    """Even with the right key, only a [message id] or [message id, http(s) URL] is read."""
    token = URLSafeSerializer(app.config["SECRET_KEY"], salt=salt).dumps(payload)
    before = engagement_events()
    for method, prefix in ENDPOINTS:
        check(getattr(client, method)(prefix + token))
    assert engagement_events() - before <= 1  # only [its id] as an open token


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "//evil.example/", "ftp://x.example/", "https://a b/", "data:,x"]
)
def test_a_signed_link_never_leads_outside_http(app, client, sent_message, url):
    response = client.get("/engage/click/" + make_token(CLICK, sent_message, url))
    assert response.status_code == 400 and "Location" not in response.headers


def test_a_valid_link_of_an_unknown_message_redirects_and_records_nothing(app, client):
    response = client.get("/engage/click/" + make_token(CLICK, 987654, "https://example.com/x"))
    assert response.status_code == 302
    assert response.headers["Location"] == "https://example.com/x"
    assert client.get("/engage/open/" + make_token(OPEN, 2**63 - 1)).status_code == 200
    assert engagement_events() == 0


@settings(FUZZ, max_examples=40)
@given(agent=st.text(max_size=2000) | st.sampled_from(["\x00", "a\x00b", "Mozilla/5.0", " " * 50]))
def test_any_user_agent_is_recorded_cleanly(app, client, sent_message, agent):
    before = engagement_events()
    raw = agent.encode("utf-8", "surrogatepass").decode("latin-1")
    headers = {"User-Agent": raw.replace("\r", "").replace("\n", "")}  # HTTP has no others
    response = client.get("/engage/open/" + make_token(OPEN, sent_message), headers=headers)
    assert response.status_code == 200
    assert engagement_events() == before + 1
    (stored,) = db.session.scalars(select(Event).order_by(Event.id.desc()).limit(1))
    recorded = stored.properties["user_agent"]
    assert len(recorded) <= 512 and "\x00" not in recorded
