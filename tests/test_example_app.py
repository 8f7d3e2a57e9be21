"""The example app: a real sign-up over HTTP shows up in Engage; seed-demo fills segments."""

from __future__ import annotations

import http.cookiejar
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import create_engine, text
from werkzeug.serving import make_server

from example_app.app import create_app, engage
from flask_engage.models import Customer, Event
from tests.conftest import database_url


def example_app(db_kind, tmp_path, **config) -> Iterator[Flask]:
    """The example app on a fresh database of the given kind, with its tables."""
    url = database_url(db_kind, tmp_path)
    if db_kind == "postgresql":
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "ENGAGE_REDIS_URL": None,
                      "ENGAGE_BASE_URL": "http://demo.example.com", **config})
    with app.app_context():
        engage.create_all()
        yield app
        app.extensions["sqlalchemy"].session.remove()
        app.extensions["sqlalchemy"].engine.dispose()


@pytest.fixture
def demo_app(db_kind, tmp_path) -> Iterator[Flask]:
    yield from example_app(db_kind, tmp_path, TESTING=True)


@pytest.fixture
def server(demo_app) -> Iterator[str]:
    """The demo app served over real HTTP in a thread."""
    httpd = make_server("127.0.0.1", 0, demo_app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join(5)


class Browser:
    """urllib with cookies: what a visitor's browser does with forms."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> tuple[int, str]:
        return self._open(urllib.request.Request(self.base + path))

    def post(self, path: str, form: dict[str, str]) -> tuple[int, str]:
        data = urllib.parse.urlencode(form).encode()
        return self._open(urllib.request.Request(self.base + path, data=data, method="POST"))

    def _open(self, request: urllib.request.Request) -> tuple[int, str]:
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


def wait_for(check, timeout: float = 1.0):
    """Poll ``check`` until it returns something truthy, within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def fresh_customer(demo_app: Flask, external_id: str) -> Customer | None:
    session = demo_app.extensions["sqlalchemy"].session
    session.rollback()
    session.expire_all()
    return session.query(Customer).filter_by(external_id=external_id).one_or_none()


def test_signup_over_http_becomes_a_customer_in_the_right_segments(demo_app, server):
    lagos = engage.create_segment("Customers in Lagos",
                                  {"attribute": "city", "op": "eq", "value": "Lagos"})
    pro = engage.create_segment("Pro plan", {"attribute": "plan", "op": "eq", "value": "pro"})
    nairobi = engage.create_segment("Customers in Nairobi",
                                    {"attribute": "city", "op": "eq", "value": "Nairobi"})
    browser = Browser(server)
    status, page = browser.get("/")
    assert status == 200 and "admin@example.com / demo" in page
    assert '<script src="/engage/static/engage.js"' in page

    status, page = browser.post("/signup", {"name": "Ada", "email": "ada@example.com",
                                            "password": "s3cret", "city": "Lagos", "plan": "pro"})
    assert status == 200 and "Verify your identity" in page
    user_id = str(demo_app.extensions["sqlalchemy"].session.execute(
        text("SELECT id FROM users WHERE email = 'ada@example.com'")).scalar_one())

    customer = wait_for(lambda: fresh_customer(demo_app, user_id))
    assert customer is not None, "the sign-up did not become a customer within a second"
    assert customer.email == "ada@example.com"
    assert customer.attributes == {"first_name": "Ada", "plan": "pro", "city": "Lagos",
                                   "kyc_done": False}
    in_lagos = wait_for(lambda: [c.external_id for c in engage.members(lagos)])
    assert in_lagos == [user_id]
    assert [c.external_id for c in engage.members(pro)] == [user_id]
    assert engage.members(nairobi).count() == 0

    status, _ = browser.get("/engage/admin/customers/")
    assert status == 403, "a customer who is not the demo admin must not see the admin"

    # KYC and a card payment are tracked as events and attribute changes.
    status, page = browser.post("/kyc", {"method": "passport", "document": "A123"})
    assert status == 200 and "virtual card is ready" in page
    status, page = browser.post("/card/pay", {"merchant": "Jumia", "amount": "1250.50"})
    assert status == 200 and "Paid $1250.50 at Jumia" in page
    spenders = engage.create_segment(
        "Spent over $1,000 this month",
        {"event": "Purchase", "window": {"calendar": "this_month"},
         "sum": {"property": "amount", "op": "gt", "value": 1000}},
    )
    assert [c.external_id for c in engage.members(spenders)] == [user_id]
    customer = fresh_customer(demo_app, user_id)
    assert customer is not None and customer.attributes["kyc_done"] is True
    session = demo_app.extensions["sqlalchemy"].session
    names = sorted(session.scalars(
        Event.__table__.select().with_only_columns(Event.name)
        .where(Event.customer_id == customer.id)
    ))
    assert names == ["Card used", "Completed KYC", "Purchase", "Signed up"]

    # Logging in (as the demo admin) records "Logged in" through @engage.track_view.
    admin = Browser(server)
    status, page = admin.post("/login", {"email": "admin@example.com", "password": "demo"})
    assert status == 200 and "Admin" in page
    status, _ = admin.post("/login", {"email": "admin@example.com", "password": "wrong"})
    assert status == 400
    assert engage.count({"event": "Logged in"}) == 1
    status, page = admin.get("/engage/admin/customers/")
    assert status == 200 and "ada@example.com" in page


def test_bad_payment_amount_is_a_400_not_a_500(demo_app):
    client = demo_app.test_client()
    client.post("/signup", data={"name": "Bo", "email": "bo@example.com", "password": "x",
                                 "city": "Accra", "plan": "free"})
    client.post("/kyc", data={"method": "BVN", "document": "1"})
    response = client.post("/card/pay", data={"merchant": "X", "amount": "lots"})
    assert response.status_code == 400 and b"amount" in response.data


def test_seed_demo_creates_segments_with_members(demo_app):
    runner = demo_app.test_cli_runner()
    started = time.perf_counter()
    result = runner.invoke(args=["engage", "seed-demo", "--customers", "200"])
    took = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    assert "200 customers" in result.output
    assert took < 20
    expected = ["Customers in Lagos", "Pro plan", "Pro in Lagos", "Not logged in for 30 days",
                "Spent over $1,000 this month", "KYC pending after 3 days",
                "Virtual card used more than 5 times this month"]
    by_name = {segment.name: segment for segment in engage.segments()}
    sizes = {}
    for name in expected:
        segment = by_name[name]
        members = engage.members(segment).count()
        assert members == engage.count(segment.filters), name
        sizes[name] = members
    assert 0 < sizes["Pro in Lagos"] < sizes["Customers in Lagos"] < 200
    assert sizes["Pro in Lagos"] <= sizes["Pro plan"]
    for name in ("Not logged in for 30 days", "KYC pending after 3 days",
                 "Spent over $1,000 this month", "Virtual card used more than 5 times this month"):
        assert 0 < sizes[name] < 200, (name, sizes[name])

    again = runner.invoke(args=["engage", "seed-demo", "--customers", "200", "--once"])
    assert again.exit_code == 0 and "nothing to do" in again.output
    session = demo_app.extensions["sqlalchemy"].session
    assert session.query(Customer).count() == 200


@pytest.fixture
def demo_mode_app(db_kind, tmp_path) -> Iterator[Flask]:
    """The example app as ``make demo`` runs it: inline jobs, no worker, not TESTING."""
    for app in example_app(db_kind, tmp_path, MAIL_SUPPRESS_SEND=True,
                           ENGAGE_SCHEDULE_INTERVAL=1, ENGAGE_RECOMPUTE_INTERVAL=1):
        assert not app.testing and app.config["ENGAGE_INLINE_SCHEDULE"]
        yield app


def test_the_demo_runs_its_schedule_without_a_worker(demo_mode_app):
    """A scheduled broadcast goes out and time-based segments refresh while people browse."""
    from datetime import timedelta

    from flask_engage.models import Broadcast, Segment, utcnow

    runner = demo_mode_app.test_cli_runner()
    assert runner.invoke(args=["engage", "seed-demo", "--customers", "50"]).exit_code == 0
    broadcast = engage.create_broadcast(
        "Tonight", channel="in_app", segments=["all"], body="Hello {{ customer.first_name }}",
        scheduled_at=utcnow() + timedelta(seconds=1),
    )
    assert engage.send_broadcast(broadcast).status == "scheduled"
    session = demo_mode_app.extensions["sqlalchemy"].session
    dormant = session.scalars(
        Segment.__table__.select().with_only_columns(Segment.last_computed_at)
        .where(Segment.slug == "not-logged-in-for-30-days")
    ).one()
    time.sleep(1.2)

    httpd = make_server("127.0.0.1", 0, demo_mode_app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        status, _ = Browser(f"http://127.0.0.1:{httpd.server_port}").get("/")  # a visitor
        assert status == 200

        def sent() -> bool:
            session.rollback()
            return session.get(Broadcast, broadcast.id).status == "sent"

        assert wait_for(sent, 10), "the scheduled broadcast was not sent without a worker"
        assert wait_for(lambda: engage.status()["last_tick"], 10)  # the tick has finished
    finally:
        httpd.shutdown()
        thread.join(5)
    refreshed = session.scalars(
        Segment.__table__.select().with_only_columns(Segment.last_computed_at)
        .where(Segment.slug == "not-logged-in-for-30-days")
    ).one()
    assert refreshed > dormant
