"""Our HTTP data API: /api/identify, /api/track (batches) and /browser/track."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from flask import request
from sqlalchemy import func, select

from flask_engage import signals
from flask_engage.models import Customer, Event
from tests.fakedns import FakeDNS
from tests.hostapp import db, engage

KEY = {"Authorization": "Bearer test-key"}


@pytest.fixture
def app_config():
    # The signed-in visitor of the host's pages, set per request by the tests.
    return {"ENGAGE_IDENTITY": lambda: request.headers.get("X-Test-User")}


def customer(external_id):
    db.session.expire_all()
    return db.session.scalar(select(Customer).where(Customer.external_id == external_id))


def counts():
    db.session.expire_all()
    return (
        db.session.scalar(select(func.count()).select_from(Customer)),
        db.session.scalar(select(func.count()).select_from(Event)),
    )


def member_ids(segment):
    db.session.expire_all()
    return sorted(c.external_id for c in engage.members(segment))


def test_identify_stores_customer_and_joins_segment(client):
    pro = engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
    seen = []

    def receiver(app, customer):
        seen.append(customer.external_id)

    with signals.customer_identified.connected_to(receiver):
        response = client.post(
            "/engage/api/identify",
            headers=KEY,
            json={
                "id": 42,
                "email": "ada@example.com",
                "attributes": {"plan": "pro", "city": "Lagos"},
            },
        )
    assert response.status_code == 200
    assert response.json == {"ok": True, "id": "42"}
    stored = customer("42")
    assert stored.email == "ada@example.com"
    assert stored.attributes == {"plan": "pro", "city": "Lagos"}
    assert member_ids(pro) == ["42"]
    assert seen == ["42"]

    client.post(
        "/engage/api/identify", headers=KEY, json={"id": "42", "attributes": {"plan": None}}
    )
    assert customer("42").attributes == {"city": "Lagos"}
    assert member_ids(pro) == []


def test_track_single_and_batch(client):
    buyers = engage.create_segment(
        "Buyers", {"event": "Purchase", "count": {"op": "gte", "value": 2}}
    )
    response = client.post(
        "/engage/api/track",
        headers=KEY,
        json={
            "id": "7",
            "event": "Purchase",
            "properties": {"amount": 12.5},
            "timestamp": "2026-01-31T09:30:00+01:00",
        },
    )
    assert response.status_code == 200, response.json
    assert member_ids(buyers) == []
    batch = [
        {"id": "7", "event": "Purchase", "properties": {"amount": 3}},
        {"id": "8", "event": "Logged in"},
    ]
    response = client.post("/engage/api/track", headers=KEY, json={"batch": batch})
    assert response.json == {"ok": True, "tracked": 2}
    assert counts() == (2, 3)
    events = db.session.scalars(select(Event).order_by(Event.id)).all()
    assert events[0].occurred_at.isoformat() == "2026-01-31T08:30:00+00:00"
    assert events[0].properties == {"amount": 12.5}
    assert member_ids(buyers) == ["7"]


def test_basic_key_secret_is_accepted(client):
    response = client.post(
        "/engage/api/track", auth=("sdk-key", "sdk-secret"), json={"id": "1", "event": "Opened app"}
    )
    assert response.status_code == 200


def test_missing_or_unknown_key_is_401(client):
    for headers in [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic c2RrLWtleTp3cm9uZw=="},
        {"Authorization": "Token test-key"},
    ]:
        for path in ("/engage/api/identify", "/engage/api/track"):
            response = client.post(path, headers=headers, json={"id": "1", "event": "x"})
            assert response.status_code == 401, headers
            assert "error" in response.json
    assert counts() == (0, 0)


BAD_IDENTIFY = [
    ({"email": "a@example.com"}, "id"),
    ({"id": "1", "name": "x"}, "name"),
    ({"id": 1.5}, "id"),
    ({"id": True}, "id"),
    ({"id": ""}, "id"),
    ({"id": "x" * 256}, "id"),
    ({"id": "1", "email": "not-an-email"}, "email"),
    ({"id": "1", "attributes": []}, "attributes"),
    ({"id": "1", "attributes": {"": 1}}, "attributes."),
    ({"id": "1", "attributes": {"a" * 129: 1}}, "attributes." + "a" * 129),
    ({"id": "1", "attributes": {"nested": {"a": 1}}}, "attributes.nested"),
    ({"id": "1", "attributes": {"big": 2**60}}, "attributes.big"),
]


def test_bad_identify_is_400_naming_the_field(client):
    for body, field in BAD_IDENTIFY:
        response = client.post("/engage/api/identify", headers=KEY, json=body)
        assert response.status_code == 400, body
        assert response.json["error"].startswith(field), (body, response.json)
    assert counts() == (0, 0)


BAD_TRACK = [
    ({"id": "1"}, "event"),
    ({"id": "1", "event": 5}, "event"),
    ({"id": "1", "event": "x", "timestamp": "yesterday"}, "timestamp"),
    ({"id": "1", "event": "x", "timestamp": 1700000000}, "timestamp"),
    ({"id": "1", "event": "x", "timestamp": "2026-13-45T00:00:00Z"}, "timestamp"),
    ({"id": "1", "event": "x", "timestamp": "9999-12-31T23:59:59-01:00"}, "timestamp"),
    ({"id": "1", "event": "x", "properties": {'a"b': 1}}, "properties."),
    ({"id": "1", "event": "x", "extra": 1}, "extra"),
    ({"batch": []}, "batch"),
    ({"batch": "x"}, "batch"),
    ({"batch": [{"id": "1", "event": "x"}], "id": "2"}, "id"),
    ({"batch": [{"id": "1", "event": "x"}] * 1001}, "batch"),
    ({"batch": [{"id": "1", "event": "x"}, 3]}, "batch[1]"),
]


def test_bad_track_is_400_naming_the_field(client):
    for body, field in BAD_TRACK:
        response = client.post("/engage/api/track", headers=KEY, json=body)
        assert response.status_code == 400, body
        assert response.json["error"].startswith(field), (body, response.json)
    assert counts() == (0, 0)


def test_batch_with_one_bad_item_stores_nothing(client):
    batch = [{"id": str(i), "event": "Purchase"} for i in range(5)]
    batch[2]["timestamp"] = "not a time"
    response = client.post("/engage/api/track", headers=KEY, json={"batch": batch})
    assert response.status_code == 400
    assert response.json["error"].startswith("batch[2].timestamp: ")
    assert response.json["field"] == "batch[2].timestamp"
    assert counts() == (0, 0)


MALFORMED = [
    ("{not json", "application/json"),
    ('{"id": 1, "event": "x", "properties": {"n": NaN}}', "application/json"),
    ("[1, 2]", "application/json"),
    ('{"id": "1", "event": "x"}', "text/plain"),
    ("id=1&event=x", "application/x-www-form-urlencoded"),
    ("", "application/json"),
    ('{"id": "1", "event": "x\\u0000"}', "application/json"),
    ('{"id": "\\ud800", "event": "x"}', "application/json"),
]


def test_malformed_bodies_are_400_json(client):
    for data, content_type in MALFORMED:
        for path in ("/engage/api/identify", "/engage/api/track"):
            response = client.post(path, headers=KEY, data=data, content_type=content_type)
            assert response.status_code == 400, data
            assert response.json["error"].split(":")[0] in ("body", "event", "id"), response.json
    assert counts() == (0, 0)


def test_body_over_limit_is_413(app, client):
    app.config["ENGAGE_MAX_BODY"] = 1000
    body = json.dumps({"id": "1", "event": "x", "properties": {"pad": "p" * 2000}})
    response = client.post(
        "/engage/api/track", headers=KEY, data=body, content_type="application/json"
    )
    assert response.status_code == 413
    assert "error" in response.json
    assert counts() == (0, 0)


def test_browser_track_uses_the_session_identity(client):
    visitor = {"X-Test-User": "visitor-1"}
    response = client.post(
        "/engage/browser/track",
        headers=visitor,
        json={"event": "Viewed pricing", "properties": {"plan": "pro"}},
    )
    assert response.status_code == 200
    assert [(e.name, e.properties) for e in db.session.scalars(select(Event))] == [
        ("Viewed pricing", {"plan": "pro"})
    ]
    assert customer("visitor-1") is not None

    same_origin = {**visitor, "Origin": "http://localhost"}
    assert (
        client.post("/engage/browser/track", headers=same_origin, json={"event": "x"}).status_code
        == 200
    )
    # A spoofed id in the body is refused, not used.
    assert (
        client.post(
            "/engage/browser/track", headers=visitor, json={"id": "someone-else", "event": "x"}
        ).status_code
        == 400
    )


BROWSER_REFUSALS = [
    ({}, {"json": {"event": "x"}}, 401),
    ({"X-Test-User": "v", "Origin": "https://evil.example"}, {"json": {"event": "x"}}, 403),
    ({"X-Test-User": "v", "Sec-Fetch-Site": "cross-site"}, {"json": {"event": "x"}}, 403),
    (
        {"X-Test-User": "v"},
        {"data": "event=x", "content_type": "application/x-www-form-urlencoded"},
        400,
    ),
    ({"X-Test-User": "v"}, {"json": {}}, 400),
]


def test_browser_track_refusals(client):
    for headers, kwargs, status in BROWSER_REFUSALS:
        response = client.post("/engage/browser/track", headers=headers, **kwargs)
        assert response.status_code == status, (headers, kwargs)
        assert "error" in response.json
    assert counts() == (0, 0)


def openapi_path(rule: str) -> str:
    """``/engage/inbox/<int(max=...):message_id>/read`` -> ``/inbox/{message_id}/read``."""
    path = rule.removeprefix("/engage")
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", path)


def test_openapi_describes_every_route_and_its_examples_work(app, client, monkeypatch):
    # The push subscription example's host resolves to a public address (nothing is sent).
    FakeDNS(monkeypatch)["push.example.com"] = ["93.184.215.14"]
    response = client.get("/engage/openapi.json")
    assert response.status_code == 200
    spec = response.json
    assert spec["openapi"] == "3.1.0"
    assert spec["servers"] == [{"url": "http://localhost/engage"}]
    described = 0
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("engage.") or rule.endpoint in (
            "engage.static",
            "engage.v1_unknown",
        ):
            continue
        path = openapi_path(rule.rule)
        assert path in spec["paths"], rule.rule
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in spec["paths"][path], (rule.rule, method)
            described += 1
    assert described >= 15

    params = {"uid": "u1", "message_id": "1", "token": "not-a-token", "slug": "no-such-list",
              "list_id": "no-such-list"}
    headers = {**KEY, "X-Test-User": "visitor-1"}
    statuses = {}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            url = "/engage" + path.format(**params)
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                jsonschema.validate(body["example"], body["schema"])
            kwargs = {"json": body["example"]} if body else {}
            if path == "/v1/users/merge":  # its example's source must exist
                client.put("/engage/v1/users/anon-123", headers=headers)
            with getattr(client, method)(url, headers=headers, **kwargs) as response:
                status = response.status_code
            assert status < 500, (method, path)
            statuses[f"{method} {path}"] = status
    for ok in (
        "post /api/identify",
        "post /api/track",
        "post /browser/track",
        "post /push/subscribe",
        "put /v1/users/{uid}",
        "post /v1/users/{uid}/events",
        "post /v1/users/merge",
        "get /inbox",
        "get /openapi.json",
    ):
        assert statuses[ok] < 300, (ok, statuses[ok])
