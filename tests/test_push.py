"""Web push: subscribe over HTTP, deliver through a local push service (201 / 410 / 500)."""

from __future__ import annotations

import base64
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import request

from flask_engage.channels.webpush import generate_vapid_keys
from flask_engage.models import Message, PushSubscription
from tests.hostapp import db, engage

PRIVATE, PUBLIC = generate_vapid_keys()


@pytest.fixture
def app_config():
    return {
        "ENGAGE_IDENTITY": lambda: request.headers.get("X-User"),
        "ENGAGE_VAPID_PRIVATE_KEY": PRIVATE,
        "ENGAGE_VAPID_PUBLIC_KEY": PUBLIC,
        "ENGAGE_VAPID_SUBJECT": "mailto:ops@example.com",
    }


class PushService(BaseHTTPRequestHandler):
    """Answers per path: /ok -> 201, /gone -> 410, /broken -> 500; records requests."""

    received: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        code = {"/ok": 201, "/gone": 410}.get(self.path.split("-")[0], 500)
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def push_service():
    PushService.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), PushService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def browser_keys() -> dict[str, str]:
    """Keys a browser would create for a subscription."""
    key = ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()  # noqa: E731
    return {"p256dh": b64(point), "auth": b64(os.urandom(16))}


def subscribe(client, user: str, endpoint: str):
    return client.post("/engage/push/subscribe", headers={"X-User": user},
                       json={"endpoint": endpoint, "keys": browser_keys(), "expirationTime": None})


def test_push_key_and_service_worker_are_served(client):
    assert client.get("/engage/push/key").get_json() == {"publicKey": PUBLIC}
    with client.get("/engage/sw.js") as worker:
        assert worker.status_code == 200 and worker.mimetype == "text/javascript"
        assert b"showNotification" in worker.data and b"notificationclick" in worker.data
        assert worker.headers["Service-Worker-Allowed"] == "/"
    with client.get("/engage/static/engage.js") as script:
        assert script.status_code == 200 and b"/push/subscribe" in script.data


def test_broadcast_over_push_201_410_500(app, client, push_service):
    for user in ("1", "2", "3"):
        engage.identify(user, email=f"{user}@example.com")
    engage.identify("4")  # never subscribed
    db.session.commit()
    assert subscribe(client, "1", f"{push_service}/ok-1").status_code == 201
    assert subscribe(client, "2", f"{push_service}/gone-2").status_code == 201
    assert subscribe(client, "3", f"{push_service}/broken-3").status_code == 201
    assert engage.count({"channel": "push", "op": "subscribed"}) == 3
    broadcast = engage.create_broadcast("Sale", channel="push", segments=["all"],
                                        subject="Sale for {{ customer.id }}", body="50% off")
    engage.send_broadcast(broadcast)
    rows = {m.customer.external_id: m for m in
            db.session.query(Message).filter_by(broadcast_id=broadcast.id)}
    assert rows["1"].status == "sent" and rows["1"].sent_at is not None
    assert rows["2"].status == "failed" and "410" in rows["2"].error
    assert rows["3"].status == "failed" and "500" in rows["3"].error
    assert (rows["4"].status, rows["4"].error) == ("skipped", "no_address")
    # the push service got encrypted payloads signed with our VAPID key
    paths = sorted(path for path, _, _ in PushService.received)
    assert paths == ["/broken-3", "/gone-2", "/ok-1"]
    for _, headers, body in PushService.received:
        assert headers["content-encoding"] == "aes128gcm"
        assert f"k={PUBLIC}" in headers["authorization"].replace(" ", "")
        assert b"Sale for" not in body and b"50% off" not in body
    # the expired subscription is gone, the others stay
    endpoints = sorted(s.endpoint.rsplit("/", 1)[1] for s in db.session.query(PushSubscription))
    assert endpoints == ["broken-3", "ok-1"]
    assert engage.broadcast_counts(broadcast)["sent"] == 1
    assert engage.broadcast_counts(broadcast)["failed"] == 2


@pytest.mark.parametrize(("body", "field"), [
    ({"endpoint": "http://push.example.com/x", "keys": {"p256dh": "a", "auth": "b"}}, "endpoint"),
    ({"endpoint": "ftp://localhost/x", "keys": {"p256dh": "a", "auth": "b"}}, "endpoint"),
    ({"endpoint": "javascript:alert(1)", "keys": {"p256dh": "a", "auth": "b"}}, "endpoint"),
    ({"endpoint": 5, "keys": {"p256dh": "a", "auth": "b"}}, "endpoint"),
    ({"keys": {"p256dh": "a", "auth": "b"}}, "endpoint"),
    ({"endpoint": "https://push.example.com/x"}, "keys"),
    ({"endpoint": "https://push.example.com/x", "keys": {"auth": "b"}}, "keys.p256dh"),
    ({"endpoint": "https://push.example.com/x", "keys": {"p256dh": "a"}}, "keys.auth"),
    ({"endpoint": "https://push.example.com/x", "keys": {"p256dh": 1, "auth": "b"}}, "keys.p256dh"),
    ({"endpoint": "https://push.example.com/x", "keys": {"p256dh": "a", "auth": "b"}, "x": 1}, "x"),
])
def test_bad_subscriptions_get_400_naming_the_field(client, body, field):
    response = client.post("/engage/push/subscribe", headers={"X-User": "9"}, json=body)
    assert response.status_code == 400
    assert response.get_json()["field"] == field
    assert db.session.query(PushSubscription).count() == 0


def test_subscribe_needs_an_identity_and_unsubscribe_removes(client):
    body = {"endpoint": "https://push.example.com/abc", "keys": browser_keys()}
    assert client.post("/engage/push/subscribe", json=body).status_code == 401
    response = client.post("/engage/push/subscribe", headers={"X-User": "5"}, json=body)
    assert response.status_code == 201
    assert engage.count({"channel": "push", "op": "subscribed"}) == 1
    # someone else cannot remove it
    response = client.post("/engage/push/unsubscribe", headers={"X-User": "6"},
                           json={"endpoint": body["endpoint"]})
    assert response.get_json()["removed"] == 0
    response = client.post("/engage/push/unsubscribe", headers={"X-User": "5"},
                           json={"endpoint": body["endpoint"]})
    assert response.get_json()["removed"] == 1
    assert engage.count({"channel": "push", "op": "subscribed"}) == 0
