"""What signed-in visitors may do through the browser endpoints: an event allowlist and a
per-visitor rate limit (built in, or Flask-Limiter's when the host app uses it)."""

from __future__ import annotations

import pytest
from flask import request
from sqlalchemy import func, select

from flask_engage.errors import ConfigurationError
from flask_engage.models import Event, Message, utcnow
from tests.hostapp import create_app, db, engage

KEY = {"Authorization": "Bearer test-key"}


@pytest.fixture
def app_config():
    return {
        "ENGAGE_IDENTITY": lambda: request.headers.get("X-User"),
        "ENGAGE_BROWSER_EVENTS": ["Viewed pricing", "Opened help"],
        "ENGAGE_BROWSER_RATE_LIMIT": "3/minute",
    }


def track(client, user, event="Viewed pricing"):
    return client.post("/engage/browser/track", headers={"X-User": user}, json={"event": event})


def events():
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(Event))


def test_only_listed_events_are_accepted_from_browsers(client):
    buyers = engage.create_segment("Buyers", {"event": "Purchase"})
    assert track(client, "v1").status_code == 200
    response = client.post(
        "/engage/browser/track",
        headers={"X-User": "v1"},
        json={"event": "Purchase", "properties": {"amount": 99999}},
    )
    assert response.status_code == 400
    assert response.json["field"] == "event"
    assert response.json["error"].startswith("event: ")
    assert events() == 1
    assert engage.members(buyers).count() == 0
    # The server-to-server API is not limited by the browser allowlist.
    response = client.post("/engage/api/track", headers=KEY, json={"id": "v1", "event": "Purchase"})
    assert response.status_code == 200
    db.session.expire_all()
    assert [c.external_id for c in engage.members(buyers)] == ["v1"]


def test_browser_endpoints_are_rate_limited_per_visitor(client):
    for _ in range(3):
        assert track(client, "v1").status_code == 200
    response = track(client, "v1")
    assert response.status_code == 429
    assert response.json["error"].startswith("rate limit: ")
    assert int(response.headers["Retry-After"]) >= 1
    assert events() == 3
    # Another visitor, and the same visitor on another endpoint, have their own counts.
    assert track(client, "v2").status_code == 200
    for _ in range(3):
        response = client.post(
            "/engage/push/unsubscribe", headers={"X-User": "v1"}, json={"endpoint": "https://x"}
        )
        assert response.status_code == 200
    response = client.post(
        "/engage/push/unsubscribe", headers={"X-User": "v1"}, json={"endpoint": "https://x"}
    )
    assert response.status_code == 429


def test_inbox_read_and_push_subscribe_are_limited(client):
    customer = engage.identify("v1")
    db.session.commit()
    message = Message(
        customer_id=customer.id, channel="in_app", status="sent", body="Hi", sent_at=utcnow()
    )
    db.session.add(message)
    db.session.commit()
    statuses = [
        client.post(f"/engage/inbox/{message.id}/read", headers={"X-User": "v1"}).status_code
        for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    body = {"endpoint": "http://127.0.0.1:9/x", "keys": {"p256dh": "a", "auth": "b"}}
    statuses = [
        client.post("/engage/push/subscribe", headers={"X-User": "v1"}, json=body).status_code
        for _ in range(4)
    ]
    assert statuses == [400, 400, 400, 429]  # refused endpoints count too


def test_no_limit_when_set_to_none(app, client):
    app.config["ENGAGE_BROWSER_RATE_LIMIT"] = None
    assert all(track(client, "v1").status_code == 200 for _ in range(10))
    assert events() == 10


def test_flask_limiter_storage_is_used_when_the_host_has_it(app, client):
    flask_limiter = pytest.importorskip("flask_limiter")
    limiter = flask_limiter.Limiter(
        flask_limiter.util.get_remote_address, app=app, storage_uri="memory://"
    )
    for _ in range(3):
        assert track(client, "v1").status_code == 200
    response = track(client, "v1")
    assert response.status_code == 429
    assert response.json["error"].startswith("rate limit: ")
    assert "Retry-After" in response.headers
    # The counts live in Flask-Limiter's storage: resetting it lets the visitor in again.
    limiter.reset()
    assert track(client, "v1").status_code == 200


def test_flask_limiter_switched_off_lifts_the_limit(app, client):
    flask_limiter = pytest.importorskip("flask_limiter")
    app.config["RATELIMIT_ENABLED"] = False
    flask_limiter.Limiter(flask_limiter.util.get_remote_address, app=app, storage_uri="memory://")
    assert all(track(client, "v1").status_code == 200 for _ in range(6))
    assert events() == 6


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("ENGAGE_BROWSER_EVENTS", "Viewed pricing"),
        ("ENGAGE_BROWSER_EVENTS", ["ok", ""]),
        ("ENGAGE_BROWSER_RATE_LIMIT", "sixty a minute"),
        ("ENGAGE_BROWSER_RATE_LIMIT", "0/minute"),
        ("ENGAGE_PUSH_ALLOW_PRIVATE", "maybe"),
    ],
)
def test_bad_settings_are_refused_at_init(tmp_path, setting, value):
    with pytest.raises(ConfigurationError, match=setting):
        create_app(f"sqlite:///{tmp_path / 'x.db'}", **{setting: value})


def test_allow_private_reads_environment_strings(tmp_path):
    app = create_app(f"sqlite:///{tmp_path / 'x.db'}", ENGAGE_PUSH_ALLOW_PRIVATE="false")
    assert app.config["ENGAGE_PUSH_ALLOW_PRIVATE"] is False
