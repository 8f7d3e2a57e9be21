"""Unsubscribe links from received emails: page, RFC 8058 one-click, tampering, resubscribe."""

from __future__ import annotations

import re

import pytest

from flask_engage import signals
from flask_engage.errors import NotFound, ValidationError
from tests.hostapp import db, engage

UNSUBSCRIBED = {"channel": "email", "op": "unsubscribed"}
BASE = "https://app.example.com"


def received_link(app, customer_id: int, email: str) -> str:
    """Send a broadcast to one customer and return the unsubscribe path from the email."""
    engage.identify(customer_id, email=email)
    db.session.commit()
    broadcast = engage.create_broadcast(f"News {customer_id}", channel="email", segments=["all"],
                                        subject="News", body="<p>Hello</p>")
    with app.extensions["mail"].record_messages() as sent:
        engage.send_broadcast(broadcast)
    (mail,) = [m for m in sent if m.recipients == [email]]
    header = mail.extra_headers["List-Unsubscribe"][1:-1]
    in_text = re.search(r"https://\S+/unsubscribe/\S+", mail.body).group(0)
    in_html = re.search(r'href="([^"]+/unsubscribe/[^"]+)"', mail.html).group(1)
    assert header == in_text == in_html and header.startswith(BASE + "/engage/unsubscribe/")
    return header[len(BASE):]


def test_one_click_post_from_a_received_email_unsubscribes(app, client):
    path = received_link(app, 1, "ada@example.com")
    assert engage.count(UNSUBSCRIBED) == 0
    page = client.get(path)
    assert page.status_code == 200 and b"Unsubscribe?" in page.data
    assert engage.count(UNSUBSCRIBED) == 0  # GET alone changes nothing (link scanners)
    seen = []
    with signals.customer_unsubscribed.connected_to(
        lambda app, customer, channel: seen.append((customer.external_id, channel))
    ):
        # RFC 8058: a POST with this body, no cookies, no session
        response = client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200 and b"You are unsubscribed" in response.data
    assert seen == [("1", "email")]
    assert engage.count(UNSUBSCRIBED) == 1
    segment = engage.create_segment("Opted out", UNSUBSCRIBED)
    assert [c.external_id for c in engage.members(segment)] == ["1"]
    # a second click is harmless and fires no second signal
    with signals.customer_unsubscribed.connected_to(lambda app, **kw: seen.append(kw)):
        assert client.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert len(seen) == 1
    # and the next broadcast skips them
    again = engage.create_broadcast("Again", channel="email", segments=["all"], subject="S",
                                    body="B")
    with app.extensions["mail"].record_messages() as sent:
        engage.send_broadcast(again)
    assert sent == [] and engage.broadcast_counts(again)["unsubscribed"] == 1


def test_resubscribe_from_the_page_and_from_python(app, client):
    path = received_link(app, 2, "bola@example.com")
    client.post(path)
    assert engage.count(UNSUBSCRIBED) == 1
    response = client.post(path, data={"action": "resubscribe"})
    assert response.status_code == 200 and b"Welcome back" in response.data
    assert engage.count(UNSUBSCRIBED) == 0
    engage.unsubscribe(2)
    assert engage.count(UNSUBSCRIBED) == 1
    engage.resubscribe("2")
    assert engage.count(UNSUBSCRIBED) == 0
    assert engage.count({"channel": "email", "op": "subscribed"}) == 1


def test_tampered_or_foreign_tokens_get_400(app, client):
    path = received_link(app, 3, "chi@example.com")
    token = path.rsplit("/", 1)[1]
    payload, signature = token.rsplit(".", 1)
    tampered = [
        f"/engage/unsubscribe/{payload}.{signature[:-2]}xx",
        f"/engage/unsubscribe/{payload[:-1]}A.{signature}",
        "/engage/unsubscribe/WzEsImVtYWlsIl0",  # unsigned [1, "email"]
        "/engage/unsubscribe/nonsense",
    ]
    for bad in tampered:
        for method in (client.get, client.post):
            response = method(bad)
            assert response.status_code == 400, bad
            assert b"not valid" in response.data
    assert engage.count(UNSUBSCRIBED) == 0
    # a token signed with another app's key is rejected too
    other = app.config["SECRET_KEY"]
    app.config["SECRET_KEY"] = "another-secret"
    try:
        assert client.post(path).status_code == 400
    finally:
        app.config["SECRET_KEY"] = other
    assert engage.count(UNSUBSCRIBED) == 0


def test_python_api_validates_its_arguments(app):
    engage.identify(4, email="d@example.com")
    db.session.commit()
    with pytest.raises(ValidationError) as info:
        engage.unsubscribe(4, channel="sms")
    assert info.value.field == "channel"
    with pytest.raises(NotFound):
        engage.unsubscribe(404)
    engage.unsubscribe(4, channel="push")
    assert engage.count({"channel": "push", "op": "unsubscribed"}) == 1
    assert engage.count(UNSUBSCRIBED) == 0
