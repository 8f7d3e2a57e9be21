"""In-app messages: a broadcast lands in the customer's inbox; read marks; privacy."""

from __future__ import annotations

import pytest
from flask import request

from tests.hostapp import db, engage


@pytest.fixture
def app_config():
    return {"ENGAGE_IDENTITY": lambda: request.headers.get("X-User")}


def test_in_app_broadcast_appears_in_the_inbox_and_can_be_read(app, client):
    engage.identify(1, name="Ada <b>")
    engage.identify(2, name="Bola")
    db.session.commit()
    broadcast = engage.create_broadcast(
        "Welcome", channel="in_app", segments=["all"], subject="Hi {{ customer.name }}",
        body="<p>Welcome, {{ customer.name }}!</p>")
    engage.send_broadcast(broadcast)
    assert engage.broadcast_counts(broadcast)["sent"] == 2

    assert client.get("/engage/inbox").status_code == 401
    ada = client.get("/engage/inbox", headers={"X-User": "1"}).get_json()
    assert ada["unread"] == 1
    (message,) = ada["messages"]
    assert message["subject"] == "Hi Ada <b>"
    assert message["body"] == "<p>Welcome, Ada &lt;b&gt;!</p>"
    assert message["text"] == "Welcome, Ada <b>!" and message["read"] is False

    bola = client.get("/engage/inbox", headers={"X-User": "2"}).get_json()
    other_id = bola["messages"][0]["id"]
    # Ada cannot read (or mark) Bola's message
    response = client.post(f"/engage/inbox/{other_id}/read", headers={"X-User": "1"})
    assert response.status_code == 404 and "error" in response.get_json()
    assert client.post("/engage/inbox/999999/read", headers={"X-User": "1"}).status_code == 404
    assert client.post(f"/engage/inbox/{other_id}/read").status_code == 401

    response = client.post(f"/engage/inbox/{message['id']}/read", headers={"X-User": "1"})
    assert response.status_code == 200
    ada = client.get("/engage/inbox", headers={"X-User": "1"}).get_json()
    assert ada["unread"] == 0 and ada["messages"][0]["read"] is True
    bola = client.get("/engage/inbox", headers={"X-User": "2"}).get_json()
    assert bola["unread"] == 1


def test_unknown_identity_has_an_empty_inbox_and_email_stays_out(app, client):
    engage.identify(3, email="c@example.com")
    db.session.commit()
    email = engage.create_broadcast("Mail", channel="email", segments=["all"], subject="S",
                                    body="B")
    engage.send_broadcast(email)
    assert client.get("/engage/inbox", headers={"X-User": "3"}).get_json() == {
        "messages": [], "unread": 0}
    assert client.get("/engage/inbox", headers={"X-User": "nobody"}).get_json() == {
        "messages": [], "unread": 0}
