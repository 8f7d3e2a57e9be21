"""Engage.so's Lists API (``/v1/lists``) over real HTTP, with Basic auth as the SDKs send it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import requests
from werkzeug.serving import make_server

from tests.hostapp import db, engage

AUTH = ("sdk-key", "sdk-secret")


@pytest.fixture
def api(app) -> Iterator[str]:
    """The app served over real HTTP on a free local port: the v1 API root."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/engage/v1"
    server.shutdown()
    thread.join()


def on_list(customer_list) -> list[str]:
    db.session.expire_all()
    return [customer.external_id for customer in engage.list_members(customer_list)]


def test_lists_round_trip_with_basic_auth(api):
    http = requests.Session()
    http.auth = AUTH
    created = http.post(
        f"{api}/lists",
        json={
            "title": "Waitlist",
            "description": "Product waiting list",
            "double_optin": True,
            "redirect_url": "https://example.com/thanks",
        },
    )
    assert created.status_code == 200, created.text
    waitlist = created.json()
    assert set(waitlist) >= {
        "id",
        "title",
        "description",
        "subscriber_count",
        "broadcast_count",
        "double_optin",
        "redirect_url",
        "created_at",
    }
    assert (waitlist["title"], waitlist["double_optin"], waitlist["subscriber_count"]) == (
        "Waitlist",
        True,
        0,
    )
    assert isinstance(waitlist["id"], str)
    url = f"{api}/lists/{waitlist['id']}"
    assert http.get(url).json() == waitlist
    assert http.get(f"{api}/lists/waitlist").json()["id"] == waitlist["id"]  # slugs work too

    updated = http.put(url, json={"title": "Early access", "redirect_url": None}).json()
    assert (updated["title"], updated["redirect_url"], updated["slug"]) == (
        "Early access",
        None,
        "early-access",
    )

    # Subscribe: the user is created (API subscriptions are trusted: no double opt-in) ...
    subscribed = http.post(
        f"{url}/subscribers",
        json={
            "email": "Dan@Mail.app",
            "first_name": "Dan",
            "number": "2348012345678",
            "meta": {"plan": "Premium"},
        },
    )
    assert subscribed.status_code == 200 and subscribed.json() == {"uid": "dan@mail.app"}
    dan = engage.get_customer("dan@mail.app")
    assert dan.email == "Dan@Mail.app"
    assert dan.attributes == {"first_name": "Dan", "number": "2348012345678", "plan": "Premium"}
    # ... or found by email, then by number, and updated
    engage.identify("u7", email="eve@example.com")
    db.session.commit()
    assert http.post(f"{url}/subscribers", json={"email": "eve@example.com"}).json() == {
        "uid": "u7"
    }
    assert http.post(
        f"{url}/subscribers", json={"number": "2348012345678", "last_name": "Brown"}
    ).json() == {"uid": "dan@mail.app"}
    assert on_list("early-access") == ["dan@mail.app", "u7"]
    assert http.get(url).json()["subscriber_count"] == 2

    status = http.put(f"{url}/subscribers/u7", json={"subscribed": False})
    assert status.json() == {"subscribed": False} and on_list("early-access") == ["dan@mail.app"]
    assert http.put(f"{url}/subscribers/u7", json={"subscribed": True}).json() == {
        "subscribed": True
    }
    assert http.delete(f"{url}/subscribers/u7").json() == {"status": "ok"}
    assert on_list("early-access") == ["dan@mail.app"]

    broadcast = engage.create_broadcast(
        "Hello", channel="email", lists=["early-access"], subject="Hi", body="Hi"
    )
    engage.send_broadcast(broadcast)
    assert http.get(url).json()["broadcast_count"] == 1

    assert http.delete(url).json() == {"status": "ok"}  # archive
    assert http.get(url).json()["archived"] is True
    assert http.get(f"{api}/lists").json() == {"data": []}
    refused = http.post(f"{url}/subscribers", json={"email": "new@example.com"})
    assert refused.status_code == 400 and "archived" in refused.json()["error"]
    assert on_list("early-access") == ["dan@mail.app"]  # existing subscribers stay


def test_every_lists_route_answers_401_without_credentials(api):
    engage.create_list("News")
    routes = [
        ("post", "/lists"),
        ("get", "/lists"),
        ("get", "/lists/news"),
        ("put", "/lists/news"),
        ("delete", "/lists/news"),
        ("post", "/lists/news/subscribers"),
        ("put", "/lists/news/subscribers/u1"),
        ("delete", "/lists/news/subscribers/u1"),
    ]
    for method, path in routes:
        for auth in (None, ("sdk-key", "wrong"), ("sdk-key", "")):
            answer = requests.request(method, api + path, auth=auth, json={})
            assert answer.status_code == 401, (method, path, auth)
            assert answer.json()["error"].startswith("authorization")
    assert engage.get_list("news").archived_at is None


def test_lists_page_with_cursors_newest_first(api):
    for n in range(23):
        engage.create_list(f"List {n:02}")
    engage.archive_list("list-05")
    http = requests.Session()
    http.auth = AUTH
    first = http.get(f"{api}/lists", params={"limit": 10}).json()
    assert [item["title"] for item in first["data"]][:3] == ["List 22", "List 21", "List 20"]
    assert "previous_cursor" not in first
    second = http.get(f"{api}/lists", params={"limit": 10, "next_cursor": first["next_cursor"]})
    second = second.json()
    third = http.get(
        f"{api}/lists", params={"limit": 10, "next_cursor": second["next_cursor"]}
    ).json()
    titles = [item["title"] for page in (first, second, third) for item in page["data"]]
    assert titles == [f"List {n:02}" for n in range(22, -1, -1) if n != 5]
    assert "next_cursor" not in third and len(third["data"]) == 2
    back = http.get(
        f"{api}/lists", params={"limit": 10, "previous_cursor": third["previous_cursor"]}
    ).json()
    assert back["data"] == second["data"]
    assert back["next_cursor"] == second["next_cursor"]
    assert len(http.get(f"{api}/lists").json()["data"]) == 10  # Engage's default


def test_lists_errors_are_engage_shaped_and_name_the_field(api):
    http = requests.Session()
    http.auth = AUTH
    engage.create_list("News")
    engage.identify("u1", email="u1@example.com")
    db.session.commit()
    cases = [
        ("post", "/lists", {}, 400, "title: required"),
        ("post", "/lists", {"title": "News"}, 400, "name: a list named 'News' already exists"),
        ("post", "/lists", {"title": "X", "double_optin": "yes"}, 400, "double_optin:"),
        ("post", "/lists", {"title": "X", "redirect_url": "ftp://x"}, 400, "redirect_url:"),
        ("post", "/lists", {"title": "X", "colour": "red"}, 400, "colour: unknown field"),
        ("get", "/lists?limit=31", None, 400, "limit:"),
        ("get", "/lists?next_cursor=abc", None, 400, "next_cursor:"),
        ("get", "/lists/nope", None, 404, "id: no list 'nope'"),
        ("get", "/lists/\u00b9", None, 404, "id: no list"),
        ("get", "/lists/99999999999999999999", None, 404, "id: no list"),
        ("get", "/lists?next_cursor=\u00b9", None, 400, "next_cursor:"),
        ("put", "/lists/nope", {"title": "Y"}, 404, "id: no list 'nope'"),
        ("post", "/lists/news/subscribers", {"first_name": "A"}, 400, "email: required"),
        ("post", "/lists/news/subscribers", {"email": "bad"}, 400, "email:"),
        ("put", "/lists/news/subscribers/u1", {"subscribed": "no"}, 400, "subscribed:"),
        ("put", "/lists/news/subscribers/ghost", {"subscribed": True}, 404, "uid: no user"),
        ("delete", "/lists/news/subscribers/ghost", None, 404, "uid: no user"),
    ]
    for method, path, body, status, message in cases:
        answer = http.request(method, api + path, json=body)
        assert answer.status_code == status, (path, body, answer.text)
        assert answer.json()["error"].startswith(message), (path, body, answer.json())
    assert [item["title"] for item in http.get(f"{api}/lists").json()["data"]] == ["News"]
    assert on_list("news") == []


def test_users_api_subscribes_to_lists_in_the_same_transaction(api):
    http = requests.Session()
    http.auth = AUTH
    engage.create_list("Waitlist")
    beta = engage.create_list("Beta testers")
    db.session.commit()

    answer = http.put(f"{api}/users/u1", json={"email": "u1@example.com", "lists": ["waitlist"]})
    assert answer.status_code == 200, answer.text
    assert "lists" not in answer.json().get("attributes", {}), "not an attribute any more"
    assert on_list("waitlist") == ["u1"]

    # one unknown list: 400 naming it, and neither the profile nor the other list changes
    refused = http.put(
        f"{api}/users/u1",
        json={"first_name": "Ada", "lists": [str(beta.id), "no-such-list"]},
    )
    assert refused.status_code == 400
    assert refused.json()["error"].startswith("lists[1]: no list 'no-such-list'")
    db.session.expire_all()
    assert "first_name" not in engage.get_customer("u1").attributes
    assert on_list("beta-testers") == []

    added = http.post(f"{api}/users/u1/lists", json={"lists": [beta.id, "waitlist"]})
    assert added.status_code == 200, added.text
    assert on_list("beta-testers") == ["u1"] and on_list("waitlist") == ["u1"]
    assert http.post(f"{api}/users/nobody/lists", json={"lists": ["waitlist"]}).status_code == 404
    assert http.post(f"{api}/users/u1/lists", json={"lists": "waitlist"}).status_code == 400

    removed = http.delete(f"{api}/users/u1/lists/waitlist")
    assert removed.status_code == 200 and on_list("waitlist") == []
    assert requests.post(f"{api}/users/u1/lists", json={"lists": ["waitlist"]}).status_code == 401
