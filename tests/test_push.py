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
from flask_engage.models import Customer, Message, PushSubscription
from tests.fakedns import FakeDNS
from tests.hostapp import db, engage

PRIVATE, PUBLIC = generate_vapid_keys()


@pytest.fixture
def app_config():
    return {
        "ENGAGE_IDENTITY": lambda: request.headers.get("X-User"),
        "ENGAGE_VAPID_PRIVATE_KEY": PRIVATE,
        "ENGAGE_VAPID_PUBLIC_KEY": PUBLIC,
        "ENGAGE_VAPID_SUBJECT": "mailto:ops@example.com",
        # The push service of these tests listens on 127.0.0.1.
        "ENGAGE_PUSH_ALLOW_PRIVATE": True,
    }


@pytest.fixture
def dns(monkeypatch):
    """Example push hosts resolve to a public address (nothing is sent to them)."""
    fake = FakeDNS(monkeypatch)
    fake["push.example.com"] = ["93.184.215.14"]
    return fake


#: What the local push service says in its error answers: it must never be stored or logged.
SECRET_ANSWER = b"internal: db password hunter2"


class PushService(BaseHTTPRequestHandler):
    """Answers per path: /ok -> 201, /gone -> 410, /moved -> 307 to /ok, else 500 with a
    body; records requests (and every connection, in ``connections``)."""

    received: list[tuple[str, dict[str, str], bytes]] = []
    connections: list[tuple[str, int]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        code = {"/ok": 201, "/gone": 410, "/moved": 307}.get(self.path.split("-")[0], 500)
        answer = SECRET_ANSWER if code == 500 else b""
        self.send_response(code)
        if code == 307:
            self.send_header("Location", "/ok-moved")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass


class CountingServer(ThreadingHTTPServer):
    def verify_request(self, request, client_address) -> bool:
        PushService.connections.append(client_address)
        return True


@pytest.fixture
def push_service():
    PushService.received = []
    PushService.connections = []
    server = CountingServer(("127.0.0.1", 0), PushService)
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


def test_subscribe_needs_an_identity_and_unsubscribe_removes(client, dns):
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


def subscriptions():
    db.session.expire_all()
    rows = db.session.query(Customer.external_id, PushSubscription.endpoint).join(
        Customer, Customer.id == PushSubscription.customer_id)
    return sorted(tuple(row) for row in rows)


def customers():
    db.session.expire_all()
    return sorted(c.external_id for c in db.session.query(Customer))


def local_endpoints(service: str) -> list[str]:
    """Ways of writing "the push service on this machine"."""
    port = service.rsplit(":", 1)[1]
    return [
        f"{service}/ok-1",
        f"https://127.0.0.1:{port}/ok-2",
        f"https://localhost:{port}/ok-3",
        f"https://[::1]:{port}/ok-4",
        f"https://[::ffff:127.0.0.1]:{port}/ok-5",
        f"https://[64:ff9b::7f00:1]:{port}/ok-6",
        f"https://2130706433:{port}/ok-7",
        f"https://0x7f.1:{port}/ok-8",
        f"https://rebound.example.com:{port}/ok-9",
        f"https://mixed.example.com:{port}/ok-10",
    ]


# Private ranges are only ever checked here, never connected to.
PRIVATE_ENDPOINTS = [
    "https://10.0.0.5/x",
    "https://172.16.0.1/x",
    "https://192.168.1.1/x",
    "https://169.254.169.254/latest/meta-data/",
    "https://100.64.0.1/x",
    "https://0.0.0.0/x",
    "https://224.0.0.1/x",
    "https://240.0.0.1/x",
    "https://[fe80::1]/x",
    "https://[fd00::1]/x",
    "https://[ff02::1]/x",
    "https://[::]/x",
    "https://[::ffff:10.0.0.5]/x",
    "https://internal.example.com/x",
    "https://nowhere.invalid/x",
    "https://user:secret@push.example.com/x",
]


def test_private_endpoints_are_refused_at_subscribe(app, client, push_service, dns):
    app.config["ENGAGE_PUSH_ALLOW_PRIVATE"] = False  # the default
    dns["rebound.example.com"] = ["127.0.0.1"]
    dns["mixed.example.com"] = ["93.184.215.14", "127.0.0.1"]
    dns["internal.example.com"] = ["10.0.0.5"]
    for endpoint in local_endpoints(push_service) + PRIVATE_ENDPOINTS:
        response = subscribe(client, "9", endpoint)
        assert response.status_code == 400, endpoint
        assert response.get_json()["field"] == "endpoint"
        assert response.get_json()["error"].startswith("endpoint: ")
    assert subscriptions() == [] and customers() == []
    assert PushService.connections == []
    # A public https host is accepted.
    assert subscribe(client, "9", "https://push.example.com/x").status_code == 201
    assert subscriptions() == [("9", "https://push.example.com/x")]


def test_by_default_no_push_reaches_a_local_listener(app, client, push_service, dns):
    """Subscriptions saved before the check, or whose DNS answer changed since: the send
    checks again, and nothing reaches the listener on 127.0.0.1."""
    app.config["ENGAGE_PUSH_ALLOW_PRIVATE"] = False
    dns["rebound.example.com"] = ["93.184.215.14"]
    port = push_service.rsplit(":", 1)[1]
    response = subscribe(client, "9", f"https://rebound.example.com:{port}/ok-9")
    assert response.status_code == 201  # public when subscribed...
    dns["rebound.example.com"] = ["127.0.0.1"]  # ...loopback when sent to
    dns["mixed.example.com"] = ["127.0.0.1", "93.184.215.14"]
    endpoints = local_endpoints(push_service)[:-2] + [f"https://mixed.example.com:{port}/ok-10"]
    for user, endpoint in enumerate(endpoints, start=1):
        engage.identify(f"u{user}")
        db.session.commit()
        customer_id = db.session.query(Customer.id).filter_by(external_id=f"u{user}").scalar()
        keys = browser_keys()
        db.session.add(PushSubscription(customer_id=customer_id, endpoint=endpoint,
                                        p256dh=keys["p256dh"], auth=keys["auth"]))
    db.session.commit()
    broadcast = engage.create_broadcast("Sale", channel="push", segments=["all"],
                                        subject="Sale", body="50% off")
    engage.send_broadcast(broadcast)
    db.session.expire_all()
    messages = db.session.query(Message).filter_by(broadcast_id=broadcast.id).all()
    assert len(messages) == 10
    for message in messages:
        assert message.status == "failed"
        assert "refused" in message.error, message.error
    assert PushService.connections == [] and PushService.received == []
    assert len(subscriptions()) == 10  # kept: a DNS answer may change back


def test_redirects_are_not_followed_and_answers_not_kept(app, client, push_service, caplog):
    for user, path in (("1", "moved-1"), ("2", "broken-2")):
        assert subscribe(client, user, f"{push_service}/{path}").status_code == 201
    broadcast = engage.create_broadcast("Sale", channel="push", segments=["all"],
                                        subject="Sale", body="50% off")
    engage.send_broadcast(broadcast)
    rows = {m.customer.external_id: m for m in
            db.session.query(Message).filter_by(broadcast_id=broadcast.id)}
    assert rows["1"].status == "failed" and "307" in rows["1"].error
    assert rows["2"].status == "failed" and "500" in rows["2"].error
    assert sorted(path for path, _, _ in PushService.received) == ["/broken-2", "/moved-1"]
    secret = SECRET_ANSWER.decode()
    assert all(secret not in (m.error or "") for m in rows.values())
    assert secret not in caplog.text


def test_an_endpoint_cannot_be_taken_over(app, client, push_service):
    endpoint = f"{push_service}/ok-1"
    assert subscribe(client, "1", endpoint).status_code == 201
    response = subscribe(client, "2", endpoint)
    assert response.status_code == 409
    assert response.get_json()["field"] == "endpoint"
    assert subscriptions() == [("1", endpoint)]
    assert customers() == ["1"]  # the refused visitor was not created either
    # Its owner may subscribe it again (new keys); after unsubscribing, it is free.
    assert subscribe(client, "1", endpoint).status_code == 201
    assert subscriptions() == [("1", endpoint)]
    unsubscribed = client.post("/engage/push/unsubscribe", headers={"X-User": "1"},
                               json={"endpoint": endpoint})
    assert unsubscribed.get_json()["removed"] == 1
    assert subscribe(client, "2", endpoint).status_code == 201
    assert subscriptions() == [("2", endpoint)]
    broadcast = engage.create_broadcast("Hi", channel="push", segments=["all"],
                                        subject="Hi", body="Hello")
    engage.send_broadcast(broadcast)
    assert [path for path, _, _ in PushService.received] == ["/ok-1"]
    sent = db.session.query(Message).filter_by(broadcast_id=broadcast.id, status="sent").one()
    assert sent.customer.external_id == "2"
