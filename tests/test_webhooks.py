"""Webhooks: broadcasts and automation steps POST signed requests to a real HTTP server
on 127.0.0.1 (issue 20); retries keep one Idempotency-Key; the receiver's answer is
reduced to its status code; local addresses are refused unless allowed."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import func, select

from flask_engage.channels.webhook import retry_after, send_test_request
from flask_engage.errors import ConfigurationError, InvalidAutomation, ValidationError
from flask_engage.models import Automation, Broadcast, Message, utcnow
from tests.fakedns import FakeDNS
from tests.hostapp import create_app, db, engage

SECRET = "whsec-test-0123456789"
#: What the receiver says in its answers: it must never be stored or logged.
ANSWER_SECRET = b"internal: db password hunter2"
#: The receiver answers with a body that never ends (one chunk every 0.1 s).
DRIP = object()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def key(self) -> str:
        return self.headers["idempotency-key"]


#: (request, attempt number for its Idempotency-Key) -> (status, seconds to wait first, body)
Answer = Callable[[Received, int], tuple[int, float, object]]


class Receiver:
    """A webhook receiver on 127.0.0.1 (HTTP/1.1, keep-alive): records every request and
    every connection; ``answer`` decides each reply. Like a careful receiver, it acts
    once per Idempotency-Key (``effects``)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.effects: list[str] = []
        self.connections = 0
        self.answer: Answer = lambda request, attempt: (200, 0, b"ok")
        #: A Retry-After header sent with 429 and 503 answers, when set.
        self.retry_after: str | None = None
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                request = Received(
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
                with receiver.lock:
                    attempt = 1 + sum(r.key == request.key for r in receiver.received)
                    receiver.received.append(request)
                status, delay, body = receiver.answer(request, attempt)
                time.sleep(delay)
                if 200 <= status < 300 and request.key not in receiver.effects:
                    receiver.effects.append(request.key)
                try:
                    self.send_response(status)
                    if status in (301, 302, 307, 308):
                        self.send_header("Location", "/elsewhere")
                    if status in (429, 503) and receiver.retry_after is not None:
                        self.send_header("Retry-After", receiver.retry_after)
                    if body is DRIP:
                        self.send_header("Transfer-Encoding", "chunked")
                        self.end_headers()
                        for _ in range(200):
                            self.wfile.write(b"1\r\nx\r\n")
                            self.wfile.flush()
                            time.sleep(0.1)
                        return
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (timeout, size cap)
                    self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def verify_request(self, request, client_address) -> bool:
                receiver.connections += 1
                return True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def keys(self) -> list[str]:
        return [r.key for r in self.received]


@pytest.fixture
def receiver():
    receiver = Receiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


LOCAL = {"ENGAGE_WEBHOOK_SECRET": SECRET, "ENGAGE_WEBHOOK_ALLOW_PRIVATE": True}


@pytest.fixture
def app_config():
    return LOCAL


def signed(received: Received) -> bool:
    """Both signatures check out with the shared secret."""
    headers, body = received.headers, received.body
    body_mac = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    stamped = f"{received.key}.{headers['x-engage-timestamp']}.".encode() + body
    request_mac = hmac.new(SECRET.encode(), stamped, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["x-engage-signature"], f"sha256={body_mac}") and (
        hmac.compare_digest(headers["x-engage-request-signature"], f"sha256={request_mac}")
    )


def messages() -> dict[str, Message]:
    db.session.expire_all()
    return {m.customer.external_id: m for m in db.session.scalars(select(Message))}


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model)) or 0


def webhook_broadcast(url: str, body: str = '{"id": {{ customer.id|tojson }}}', **options):
    return engage.create_broadcast(
        "Hook", channel="webhook", segments=["all"], body=body, options={"url": url, **options}
    )


def test_a_broadcast_posts_one_signed_request_per_customer(app, receiver):
    engage.identify("1", email="ada@example.com", name='Ada "the Countess"')
    engage.identify("2", email="bola+vip@example.com", name="Bola")
    engage.identify("x/../admin?y", email="odd@example.com", name="Odd")
    db.session.commit()
    broadcast = engage.create_broadcast(
        "CRM sync",
        channel="webhook",
        segments=["all"],
        body='{"id": {{ customer.id|tojson }}, "name": {{ customer.name|tojson }}}',
        options={
            "url": receiver.url + "/hooks/{{ customer.id }}?email={{ customer.email }}",
            "headers": {"X-Campaign": "spring-{{ customer.name|lower }}"},
        },
    )
    started = utcnow()
    assert engage.send_broadcast(broadcast).status == "sent"

    rows = messages()
    assert {m.status for m in rows.values()} == {"sent"}
    assert sorted(receiver.keys()) == sorted(str(m.id) for m in rows.values())  # once each
    by_key = {r.key: r for r in receiver.received}
    for customer_id, name, path in [
        ("1", 'Ada "the Countess"', "/hooks/1?email=ada%40example.com"),
        ("2", "Bola", "/hooks/2?email=bola%2Bvip%40example.com"),
        ("x/../admin?y", "Odd", "/hooks/x%2F..%2Fadmin%3Fy?email=odd%40example.com"),
    ]:
        message = rows[customer_id]
        request = by_key[str(message.id)]
        assert request.path == path  # customer data cannot change where the request goes
        assert json.loads(request.body) == {"id": customer_id, "name": name}
        assert request.headers["content-type"] == "application/json"
        assert request.headers["x-campaign"] == f"spring-{name.lower()}"
        assert signed(request)
        assert abs(int(request.headers["x-engage-timestamp"]) - started.timestamp()) < 60
        assert message.body == request.body.decode()
        assert message.receipt["status"] == 200 and message.receipt["latency_ms"] >= 0
        assert message.subject is None
    assert receiver.connections == 1  # one kept-alive connection for the batch
    assert engage.broadcast_counts(broadcast)["sent"] == 3


def test_an_automation_step_posts_a_text_body_after_its_wait(app, receiver):
    pro = engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
    engage.create_automation(
        "Tell sales",
        trigger={"joins": pro},
        steps=[
            {"wait": {"days": 1}},
            {
                "send": {
                    "channel": "webhook",
                    "url": receiver.url + "/slack",
                    "body": "{{ customer.email }} upgraded to {{ customer.plan }}",
                    "headers": {"Authorization": "Bearer team-token"},
                }
            },
        ],
    )
    t0 = utcnow()
    engage.identify("7", email="gift@example.com", plan="pro")
    db.session.commit()
    engage.run_due(t0 + timedelta(hours=12))
    assert receiver.received == []

    engage.run_due(t0 + timedelta(days=1, hours=1))
    [request] = receiver.received
    assert request.path == "/slack"
    assert request.body == b"gift@example.com upgraded to pro"
    assert request.headers["content-type"] == "text/plain; charset=utf-8"
    assert request.headers["authorization"] == "Bearer team-token"
    assert signed(request)
    message = messages()["7"]
    assert (message.status, request.key) == ("sent", str(message.id))
    assert message.automation_id is not None and message.receipt["status"] == 200

    engage.run_due(t0 + timedelta(days=3))
    assert len(receiver.received) == 1


def test_a_body_with_tags_is_sent_as_written_not_as_html(app, receiver):
    engage.identify("5", name="O'Brien & <Sons>")
    db.session.commit()
    body = '{"text": "<https://app.example.com/c/{{ customer.id }}|{{ customer.name }}> paid"}'
    engage.send_broadcast(webhook_broadcast(receiver.url + "/slack", body))
    [request] = receiver.received
    assert json.loads(request.body) == {
        "text": "<https://app.example.com/c/5|O'Brien & <Sons>> paid"
    }
    assert messages()["5"].body == request.body.decode()


def test_customer_data_that_cannot_go_in_a_header_fails_that_message_alone(app, receiver):
    engage.identify("1", name="Ada")
    engage.identify("2", name="two\nlines")
    engage.identify("3", name="Zoë 🦊")
    db.session.commit()
    engage.send_broadcast(
        webhook_broadcast(receiver.url, headers={"X-Name": "{{ customer.name }}"})
    )
    rows = messages()
    assert rows["1"].status == "sent"
    assert (rows["2"].status, rows["2"].error) == (
        "failed",
        "headers.X-Name: the rendered value is not one line",
    )
    assert (rows["3"].status, rows["3"].error) == (
        "failed",
        "headers.X-Name: the rendered value has characters a header cannot carry",
    )
    assert [r.headers["x-name"] for r in receiver.received] == ["Ada"]


def test_a_500_is_retried_with_the_same_key_and_ends_sent_once(app, receiver, caplog):
    receiver.answer = lambda request, attempt: (
        (500, 0, ANSWER_SECRET) if attempt == 1 else (200, 0, b"done")
    )
    engage.identify("a")
    engage.identify("b")
    db.session.commit()
    broadcast = webhook_broadcast(receiver.url + "/coupon")
    with caplog.at_level(logging.WARNING, logger="flask_engage"):
        assert engage.send_broadcast(broadcast).status == "sending"
    first = messages()
    assert {(m.status, m.attempts, m.error) for m in first.values()} == {
        ("queued", 1, "webhook answered 500")
    }
    assert {m.receipt["status"] for m in first.values()} == {500}

    now = utcnow()
    engage.run_due(now + timedelta(seconds=30))  # the backoff has not passed
    assert len(receiver.received) == 2
    engage.run_due(now + timedelta(minutes=2))
    assert len(receiver.received) == 4
    engage.run_due(now + timedelta(days=1))  # nothing left to send
    assert len(receiver.received) == 4

    rows = messages()
    assert {(m.status, m.receipt["status"]) for m in rows.values()} == {("sent", 200)}
    keys = receiver.keys()
    assert sorted(keys) == sorted(2 * [str(m.id) for m in rows.values()])  # stable keys
    assert sorted(receiver.effects) == sorted(set(keys))  # acted on once per customer
    assert all(signed(request) for request in receiver.received)
    assert db.session.get(Broadcast, broadcast.id).status == "sent"
    assert ANSWER_SECRET.decode() not in caplog.text
    assert "webhook answered 500" in caplog.text


@pytest.mark.parametrize(
    ("status", "outcome", "error"),
    [
        (400, "failed", "webhook answered 400"),
        (404, "failed", "webhook answered 404"),
        (410, "failed", "webhook answered 410"),
        (301, "failed", "webhook answered 301 (redirects are not followed)"),
        (429, "queued", "webhook answered 429"),
        (503, "queued", "webhook answered 503"),
    ],
)
def test_answers_fail_or_retry_the_message_by_status(app, receiver, caplog, status, outcome, error):
    receiver.answer = lambda request, attempt: (status, 0, ANSWER_SECRET)
    engage.identify("a")
    db.session.commit()
    with caplog.at_level(logging.WARNING, logger="flask_engage"):
        engage.send_broadcast(webhook_broadcast(receiver.url + "/hook"))
    message = messages()["a"]
    assert (message.status, message.error, message.receipt["status"]) == (outcome, error, status)
    assert [r.path for r in receiver.received] == ["/hook"]  # no redirect followed
    assert ANSWER_SECRET.decode() not in caplog.text
    if outcome == "failed":
        engage.run_due(utcnow() + timedelta(days=1))
        assert len(receiver.received) == 1  # a refusal is not retried


@pytest.mark.parametrize("app_config", [{**LOCAL, "ENGAGE_WEBHOOK_TIMEOUT": 1}])
def test_a_slow_receiver_times_out_and_the_retry_carries_the_same_key(app, receiver):
    receiver.answer = lambda request, attempt: (200, 2.5 if attempt == 1 else 0, b"ok")
    engage.identify("a")
    db.session.commit()
    started = time.monotonic()
    engage.send_broadcast(webhook_broadcast(receiver.url + "/slow"))
    assert time.monotonic() - started < 2.4  # did not wait for the answer
    message = messages()["a"]
    assert (message.status, message.error) == ("queued", "webhook timed out after 1s")
    assert message.receipt["latency_ms"] >= 1000 and "status" not in message.receipt

    engage.run_due(utcnow() + timedelta(minutes=2))
    message = messages()["a"]
    assert (message.status, message.receipt["status"]) == ("sent", 200)
    assert receiver.keys() == [str(message.id)] * 2
    assert receiver.effects == [str(message.id)]  # the late first one was not acted on twice


@pytest.mark.parametrize("app_config", [{**LOCAL, "ENGAGE_WEBHOOK_TIMEOUT": 1}])
def test_an_answer_that_never_ends_does_not_hold_the_sender(app, receiver):
    receiver.answer = lambda request, attempt: (200, 0, DRIP)
    engage.identify("a")
    db.session.commit()
    started = time.monotonic()
    engage.send_broadcast(webhook_broadcast(receiver.url + "/drip"))
    assert time.monotonic() - started < 4
    assert messages()["a"].status == "sent"


def test_an_unreachable_receiver_is_retried(app, receiver):
    engage.identify("a")
    db.session.commit()
    url = receiver.url
    receiver.server.shutdown()
    receiver.server.server_close()  # nothing listens on the port any more
    engage.send_broadcast(webhook_broadcast(url + "/gone"))
    message = messages()["a"]
    assert message.status == "queued" and message.attempts == 1
    assert message.error.startswith("webhook unreachable (")


@pytest.mark.parametrize("app_config", [{"ENGAGE_WEBHOOK_SECRET": SECRET}])
def test_local_addresses_are_refused_by_default(app, receiver, monkeypatch):
    engage.identify("a")
    db.session.commit()
    for url in (receiver.url, f"http://localhost:{receiver.port}", "http://169.254.169.254/"):
        with pytest.raises(ValidationError) as refused:
            webhook_broadcast(url + "/hook")
        assert refused.value.field == "url"
        assert "not a public internet host" in str(refused.value)
    with pytest.raises(InvalidAutomation) as refused:
        engage.create_automation(
            "Local",
            trigger={"joins": "all"},
            steps=[{"send": {"channel": "webhook", "url": receiver.url, "body": "x"}}],
        )
    assert refused.value.field == "steps[0].send.url"
    assert count(Broadcast) == count(Automation) == 0

    # A name that was public when the send was saved and points here at send time
    dns = FakeDNS(monkeypatch)
    dns["hooks.example.com"] = ["93.184.215.14"]
    broadcast = webhook_broadcast(f"http://hooks.example.com:{receiver.port}/hook")
    dns["hooks.example.com"] = ["127.0.0.1"]
    engage.send_broadcast(broadcast)
    message = messages()["a"]
    assert message.status == "failed"
    assert message.error == "url: host 'hooks.example.com' is not a public internet host"
    assert receiver.connections == 0 and receiver.received == []


@pytest.mark.parametrize("app_config", [{"ENGAGE_WEBHOOK_ALLOW_PRIVATE": True}])
def test_a_webhook_send_needs_the_secret(app, receiver):
    with pytest.raises(ConfigurationError, match="ENGAGE_WEBHOOK_SECRET"):
        webhook_broadcast(receiver.url)
    with pytest.raises(ConfigurationError, match="ENGAGE_WEBHOOK_SECRET"):
        engage.create_automation(
            "Hook",
            trigger={"joins": "all"},
            steps=[{"send": {"channel": "webhook", "url": receiver.url, "body": "x"}}],
        )
    assert count(Broadcast) == count(Automation) == 0

    # a secret removed after saving fails the message before anything is sent
    app.config["ENGAGE_WEBHOOK_SECRET"] = SECRET
    broadcast = webhook_broadcast(receiver.url)
    app.config["ENGAGE_WEBHOOK_SECRET"] = None
    engage.identify("a")
    db.session.commit()
    engage.send_broadcast(broadcast)
    assert "ENGAGE_WEBHOOK_SECRET" in messages()["a"].error
    assert receiver.received == []


@pytest.mark.parametrize(
    ("secret", "timeout"), [("", 10), ("   ", 10), (b"bytes", 10), (SECRET, 0), (SECRET, "x")]
)
def test_webhook_settings_are_checked_at_init_app(tmp_path, secret, timeout):
    with pytest.raises(ConfigurationError, match="ENGAGE_WEBHOOK_"):
        create_app(
            f"sqlite:///{tmp_path / 'x.db'}",
            ENGAGE_WEBHOOK_SECRET=secret,
            ENGAGE_WEBHOOK_TIMEOUT=timeout,
        )


URL = "http://127.0.0.1:9/hook"


@pytest.mark.parametrize(
    ("options", "subject", "field"),
    [
        ({}, None, "url"),
        ({"url": ""}, None, "url"),
        ({"url": "ftp://127.0.0.1/x"}, None, "url"),
        ({"url": "https://{{ customer.host }}/x"}, None, "url"),
        ({"url": "{{ customer.url }}"}, None, "url"),
        ({"url": "https://hooks.{{ customer.id }}.example.com/x"}, None, "url"),
        ({"url": URL + "/{{ customer._secret }}"}, None, "url"),
        ({"url": URL, "headers": "X-A: 1"}, None, "headers"),
        ({"url": URL, "headers": {"Bad Header": "1"}}, None, "headers"),
        ({"url": URL, "headers": {"X-Engage-Signature": "x"}}, None, "headers.X-Engage-Signature"),
        ({"url": URL, "headers": {"Idempotency-Key": "x"}}, None, "headers.Idempotency-Key"),
        ({"url": URL, "headers": {"X-A": "a\r\nX-B: b"}}, None, "headers.X-A"),
        ({"url": URL, "headers": {"X-A": 5}}, None, "headers.X-A"),
        ({"url": URL, "headers": {"X-A": "{{ customer.__class__ }}"}}, None, "headers.X-A"),
        ({"url": URL, "headers": {"X-A": "1", "x-a": "2"}}, None, "headers.x-a"),
        ({"url": URL, "method": "PUT"}, None, "options.method"),
        ({"url": URL}, "Hello", "subject"),
    ],
)
def test_bad_webhook_settings_are_refused_naming_the_field(app, options, subject, field):
    with pytest.raises(ValidationError) as refused:
        engage.create_broadcast(
            "Hook",
            channel="webhook",
            segments=["all"],
            subject=subject,
            body="{}",
            options=options,
        )
    assert refused.value.field == field
    assert str(refused.value).startswith(f"{field}: ")
    assert count(Broadcast) == 0


def test_bad_webhook_steps_are_refused_naming_the_step(app):
    for send, field in [
        ({"body": "x"}, "steps[0].send.url"),
        ({"url": URL, "body": "x", "method": "PUT"}, "steps[0].send.method"),
        ({"url": URL, "body": "x", "subject": "Hi"}, "steps[0].send.subject"),
    ]:
        with pytest.raises(InvalidAutomation) as refused:
            engage.create_automation(
                "Hook", trigger={"joins": "all"}, steps=[{"send": {"channel": "webhook", **send}}]
            )
        assert refused.value.field == field
    assert count(Automation) == 0


def test_options_of_channels_without_settings_are_refused(app):
    with pytest.raises(ValidationError) as refused:
        engage.create_broadcast(
            "Mail",
            channel="email",
            segments=["all"],
            subject="Hi",
            body="Hello",
            options={"url": URL},
        )
    assert refused.value.field == "options.url"
    assert count(Broadcast) == 0


def test_webhooks_cannot_be_opted_out_of(app):
    engage.identify("a")
    db.session.commit()
    with pytest.raises(ValidationError):
        engage.unsubscribe("a", "webhook")
    with pytest.raises(ValidationError):
        engage.count({"channel": "webhook", "op": "unsubscribed"})


def test_send_test_request_reports_status_and_latency(app, receiver):
    receiver.answer = lambda request, attempt: (
        (200, 0, b"ok") if request.path == "/ok" else (500, 0, ANSWER_SECRET)
    )
    body = '{"email": {{ customer.email|tojson }}}'
    ok = send_test_request(receiver.url + "/ok", body, {"X-Test": "yes"})
    assert (ok.ok, ok.status, ok.error) == (True, 200, None)
    assert isinstance(ok.latency_ms, int)
    [request] = receiver.received
    assert json.loads(request.body) == {"email": "someone@example.com"}
    assert request.key.startswith("test-") and signed(request)
    assert request.headers["x-test"] == "yes"

    broken = send_test_request(receiver.url + "/broken", body)
    assert (broken.ok, broken.status, broken.error) == (False, 500, "webhook answered 500")

    customer = engage.identify("9", email="nine@example.com")
    db.session.commit()
    send_test_request(receiver.url + "/ok", body, customer=customer)
    assert json.loads(receiver.received[-1].body) == {"email": "nine@example.com"}

    with pytest.raises(ValidationError):
        send_test_request("ftp://example.com/", body)


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_a_receivers_retry_after_is_honoured(app, receiver, form):
    # 429 with "come back in an hour": the usual 1-minute backoff would be too soon
    later = utcnow() + timedelta(hours=1)
    receiver.retry_after = "3600" if form == "seconds" else format_datetime(later, usegmt=True)
    receiver.answer = lambda request, attempt: (429, 0, b"") if attempt == 1 else (200, 0, b"ok")
    engage.identify("a")
    db.session.commit()
    engage.send_broadcast(webhook_broadcast(receiver.url + "/hook"))
    message = messages()["a"]
    assert message.status == "queued" and message.error.startswith("webhook answered 429")
    assert "Retry-After" in message.error
    now = utcnow()
    engage.run_due(now + timedelta(minutes=30))  # past the backoff, not past Retry-After
    assert len(receiver.received) == 1
    engage.run_due(now + timedelta(hours=1, minutes=1))
    assert len(receiver.received) == 2 and messages()["a"].status == "sent"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("120", 120.0), (" 7 ", 7.0), ("soon", None), ("", None), ("-5", None), ("1e9", None)],
)
def test_retry_after_values(value, seconds):
    assert retry_after(value) == seconds


def test_a_retry_after_in_the_past_or_far_future_stays_within_reason():
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    assert retry_after("Sun, 29 Nov 2026 11:00:00 GMT", now) == 0.0
    assert retry_after("Sun, 29 Nov 2026 12:10:00 GMT", now) == 600.0
    assert retry_after("99999999999999999999") == 10.0**9  # capped here, a day at send
