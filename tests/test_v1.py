"""The Engage.so-compatible v1 user API, driven with requests shaped like Engage's SDKs."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from werkzeug.serving import make_server

from flask_engage import signals
from flask_engage.errors import NotFound, ValidationError
from flask_engage.models import (
    Customer,
    Event,
    Message,
    PushSubscription,
    Segment,
    Unsubscription,
    utcnow,
)
from tests.hostapp import db, engage

AUTH = ("sdk-key", "sdk-secret")
V1 = "/engage/v1"


def customer(external_id):
    db.session.expire_all()
    return db.session.scalar(select(Customer).where(Customer.external_id == external_id))


def events_of(external_id):
    db.session.expire_all()
    return [
        (e.name, e.properties)
        for e in db.session.scalars(
            select(Event)
            .join(Customer)
            .where(Customer.external_id == external_id)
            .order_by(Event.id)
        )
    ]


def member_ids(segment):
    db.session.expire_all()
    return sorted(c.external_id for c in engage.members(segment))


def test_identify_with_standard_fields_and_meta(client):
    premium = engage.create_segment(
        "Premium", {"attribute": "plan", "op": "eq", "value": "Premium"}
    )
    # What engagesdk / engage-js send for identify({id, email, first_name, created_at, plan}).
    body = {
        "id": "u13345",
        "email": "dan@mail.app",
        "first_name": "Dan",
        "number": "2348012345678",
        "created_at": "2020-05-30T09:30:10Z",
        "is_account": False,
        "tz": "Africa/Lagos",
        "meta": {"plan": "Premium", "age": 31},
    }
    response = client.put(f"{V1}/users/u13345", auth=AUTH, json=body)
    assert response.status_code == 200, response.json
    assert response.json["id"] == "u13345"
    assert response.json["email"] == "dan@mail.app"
    assert response.json["created_at"] == "2020-05-30T09:30:10+00:00"
    stored = customer("u13345")
    assert stored.email == "dan@mail.app"
    assert stored.attributes == {
        "first_name": "Dan",
        "number": "2348012345678",
        "is_account": False,
        "tz": "Africa/Lagos",
        "timezone": "Africa/Lagos",  # what automations' waits read
        "plan": "Premium",
        "age": 31,
    }
    assert response.json["attributes"] == stored.attributes
    assert stored.created_at == datetime(2020, 5, 30, 9, 30, 10, tzinfo=UTC)
    assert member_ids(premium) == ["u13345"]

    # addAttribute: a partial update merges; created_at as epoch seconds.
    response = client.put(
        f"{V1}/users/u13345",
        auth=AUTH,
        json={"last_name": "Obi", "created_at": 1590831010, "meta": {"plan": "Free"}},
    )
    assert response.status_code == 200
    stored = customer("u13345")
    assert stored.attributes["last_name"] == "Obi"
    assert stored.attributes["first_name"] == "Dan"
    assert stored.created_at == datetime(2020, 5, 30, 9, 30, 10, tzinfo=UTC)
    assert member_ids(premium) == []


def test_empty_body_creates_the_customer(client):
    response = client.put(f"{V1}/users/anon-1", auth=AUTH)
    assert response.status_code == 200
    assert response.json["id"] == "anon-1"
    assert customer("anon-1").attributes == {}
    assert client.put(f"{V1}/users/anon-2", auth=AUTH, json={}).status_code == 200
    assert customer("anon-2") is not None


def test_track_shapes(client):
    badges = engage.create_segment(
        "Gold",
        {"event": "New badge", "where": [{"property": "value", "op": "eq", "value": "gold"}]},
    )
    calls = [
        {"event": "paid", "value": True},  # track(uid, "paid")
        {"event": "New badge", "value": "gold", "timestamp": "2020-05-30T09:30:10Z"},
        {
            "event": "Add to cart",
            "properties": {"product": "T123", "currency": "USD", "amount": 12.99},
        },
        {"event": "Level", "value": 3, "timestamp": 1590831010},
    ]
    for body in calls:
        response = client.post(f"{V1}/users/u1/events", auth=AUTH, json=body)
        assert response.status_code == 200, response.json
    assert events_of("u1") == [
        ("paid", {"value": True}),
        ("New badge", {"value": "gold"}),
        ("Add to cart", {"product": "T123", "currency": "USD", "amount": 12.99}),
        ("Level", {"value": 3}),
    ]
    times = db.session.scalars(select(Event.occurred_at).order_by(Event.id)).all()
    assert times[1] == times[3] == datetime(2020, 5, 30, 9, 30, 10, tzinfo=UTC)
    assert member_ids(badges) == ["u1"]


def _seed_pair(session):
    """anon: events, attributes, an unsubscription, a push subscription, an inbox message."""
    engage.identify("anon", attributes={"plan": "free", "source": "ad"})
    engage.track("anon", "Purchase", {"amount": 5})
    engage.identify("42", email="ada@example.com", attributes={"plan": "pro"})
    session.commit()
    anon = customer("anon")
    session.add(
        PushSubscription(
            customer_id=anon.id, endpoint="https://push.example.com/1", p256dh="k", auth="a"
        )
    )
    session.add(
        Message(customer_id=anon.id, channel="in_app", status="sent", body="Hi", sent_at=utcnow())
    )
    session.commit()
    engage.unsubscribe("anon", "email")


def test_merge_over_http(client, session):
    buyers = engage.create_segment("Buyers", {"event": "Purchase"})
    pros = engage.create_segment("Pros", {"attribute": "plan", "op": "eq", "value": "pro"})
    _seed_pair(session)
    assert member_ids(buyers) == ["anon"]
    merged = []

    def receiver(app, source_id, customer):
        merged.append((source_id, customer.external_id))

    with signals.customers_merged.connected_to(receiver):
        response = client.post(
            f"{V1}/users/merge", auth=AUTH, json={"source": "anon", "destination": "42"}
        )
    assert response.status_code == 200, response.json
    assert response.json["id"] == "42"
    assert merged == [("anon", "42")]
    assert customer("anon") is None
    dest = customer("42")
    assert dest.attributes == {"plan": "pro", "source": "ad"}  # destination wins
    assert dest.email == "ada@example.com"
    assert events_of("42") == [("Purchase", {"amount": 5})]
    assert session.scalars(
        select(Unsubscription.channel).where(Unsubscription.customer_id == dest.id)
    ).all() == ["email"]
    assert session.scalar(select(PushSubscription.customer_id)) == dest.id
    assert session.scalar(select(Message.customer_id)) == dest.id
    assert member_ids(buyers) == ["42"]
    assert member_ids(pros) == ["42"]
    counts = dict(session.execute(select(Segment.slug, Segment.member_count)).all())
    assert counts == {"all": 1, "buyers": 1, "pros": 1}


def test_merge_errors_over_http(client, session):
    engage.identify("42")
    session.commit()
    response = client.post(
        f"{V1}/users/merge", auth=AUTH, json={"source": "nobody", "destination": "42"}
    )
    assert response.status_code == 404
    assert response.json["error"].startswith("source")
    response = client.post(f"{V1}/users/merge", auth=AUTH, json={"source": "42", "destination": 42})
    assert response.status_code == 400
    assert response.json["error"].startswith("destination")
    response = client.post(f"{V1}/users/merge", auth=AUTH, json={"source": "42"})
    assert response.status_code == 400
    assert response.json["error"].startswith("destination")
    assert customer("42") is not None


def test_python_merge(app, session):
    _seed_pair(session)
    result = engage.merge("anon", "new-user")  # an unknown destination is created
    assert result.external_id == "new-user"
    assert customer("anon") is None
    assert customer("new-user").attributes == {"plan": "free", "source": "ad"}
    assert events_of("new-user") == [("Purchase", {"amount": 5})]
    with pytest.raises(NotFound):
        engage.merge("anon", "42")
    with pytest.raises(ValidationError):
        engage.merge("42", 42)


def test_errors_are_json_naming_the_field(client):
    assert client.put(f"{V1}/users/u1", json={}).status_code == 401
    assert client.put(f"{V1}/users/u1", auth=("sdk-key", "wrong"), json={}).json["error"]
    assert client.put(f"{V1}/users/u1", auth=("sdk-key", "wrong"), json={}).status_code == 401
    assert (
        client.put(
            f"{V1}/users/u1", headers={"Authorization": "Bearer sdk-key:sdk-secret"}, json={}
        ).status_code
        == 200
    )
    bad_users = [
        ({"email": "nope"}, "email"),
        ({"first_name": 5}, "first_name"),
        ({"is_account": "yes"}, "is_account"),
        ({"lists": "news"}, "lists"),
        ({"created_at": "last week"}, "created_at"),
        ({"created_at": 1e20}, "created_at"),
        ({"meta": {"": 1}}, "meta."),
        ({"meta": []}, "meta"),
        ({"id": "someone-else"}, "id"),
        ({"plan": "pro"}, "plan"),
    ]
    for body, field in bad_users:
        response = client.put(f"{V1}/users/u2", auth=AUTH, json=body)
        assert response.status_code == 400, body
        assert response.json["error"].startswith(field), (body, response.json)
    bad_events = [
        ({}, "event"),
        ({"event": ""}, "event"),
        ({"event": "x", "value": {"a": 1}}, "value"),
        ({"event": "x", "value": None}, "value"),
        ({"event": "x", "timestamp": "soon"}, "timestamp"),
        ({"event": "x", "timestamp": True}, "timestamp"),
        ({"event": "x", "properties": "p"}, "properties"),
        ({"event": "x", "extra": 1}, "extra"),
    ]
    for body, field in bad_events:
        response = client.post(f"{V1}/users/u2/events", auth=AUTH, json=body)
        assert response.status_code == 400, body
        assert response.json["error"].startswith(field), (body, response.json)
    assert customer("u2") is None
    for method, path in [
        ("post", "/users/u1/accounts"),
        ("post", "/users/u1/convert"),
        ("delete", "/users/u1/accounts/a1"),
        ("get", "/users/u1"),
        ("get", "/nothing"),
    ]:
        response = getattr(client, method)(f"{V1}{path}", auth=AUTH, json={})
        assert response.status_code == 404, path
        assert "error" in response.json


@pytest.fixture
def live_url(app):
    """The app served over real HTTP on a free local port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def test_official_python_sdk(live_url, session):
    engagesdk = pytest.importorskip("engagesdk")
    from engagesdk.base import EngageBase

    engagesdk.API_URL = f"{live_url}{V1}"
    EngageBase._shared_state.clear()
    client = engagesdk.Engage(api_key="sdk-key", secret_key="sdk-secret")
    answer = client.users.identify(
        {
            "id": "u13345",
            "email": "dan@mail.app",
            "created_at": "2020-05-30T09:30:10Z",
            "plan": "Premium",
        }
    )
    assert answer["id"] == "u13345"
    client.users.add_attribute("u13345", {"first_name": "Dan"})
    client.users.track("u13345", "paid")
    client.users.track("u13345", {"event": "Add to cart", "properties": {"amount": 12.99}})
    EngageBase._shared_state.clear()
    stored = customer("u13345")
    assert stored.email == "dan@mail.app"
    assert stored.attributes == {"plan": "Premium", "first_name": "Dan"}
    assert events_of("u13345") == [("paid", {"value": True}), ("Add to cart", {"amount": 12.99})]
    assert session.scalar(select(func.count()).select_from(Customer)) == 1
