"""The admin panel over HTTP: access control, CSRF, pages, builder count, sends, speed."""

from __future__ import annotations

import re
import time

import pytest
from flask import Flask
from sqlalchemy import text

from flask_engage.models import Broadcast, Segment
from tests.hostapp import Order, User, db, engage

ADMIN = "/engage/admin"
TOKEN = "test-token-123"
ID_ARGS = ("customer_id", "segment_id", "broadcast_id", "automation_id", "list_id")


@pytest.fixture
def data(app):
    """One customer with an order, a segment, a draft broadcast, an automation and a
    public list the customer is on."""
    user = User(id=1, email="ada@example.com", plan="pro", city="Lagos")
    db.session.add(user)
    db.session.flush()
    db.session.add(Order(user_id=1, amount=25))
    db.session.commit()
    segment = engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
    broadcast = engage.create_broadcast(
        "Hello", channel="email", segments=[segment], subject="Hi", body="Hello {{ customer.city }}"
    )
    automation = engage.create_automation(
        "Welcome", trigger={"joins": segment}, steps=[{"send": {"channel": "in_app", "body": "Hi"}}]
    )
    customer_list = engage.create_list("Newsletter", public=True)
    engage.add_to_list(customer_list, 1)
    db.session.commit()
    customer_id = db.session.scalar(text("SELECT id FROM engage_customers WHERE external_id = '1'"))
    return {
        "list_id": customer_list.id,
        "customer_id": customer_id,
        "segment_id": segment.id,
        "broadcast_id": broadcast.id,
        "automation_id": automation.id,
    }


def admin_urls(app: Flask, ids: dict[str, int]) -> list[tuple[str, str]]:
    """Every (method, url) of the admin: all views and AJAX endpoints, static files excepted."""
    urls = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("engage_") or rule.endpoint.endswith(".static"):
            continue
        values = {name: ids[name] for name in rule.arguments if name in ID_ARGS}
        path = rule.build(values)[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            urls.append((method, path))
    return urls


def test_mounts_on_the_hosts_admin_when_it_exists(tmp_path):
    from flask_admin import Admin

    host = Flask("host")
    host.config.update(
        TESTING=True, SECRET_KEY="x", SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'host.db'}"
    )
    db.init_app(host)
    admin = Admin(host, name="Host admin")
    engage.init_app(host, db=db)
    assert host.extensions["admin"] == [admin]
    with host.app_context():
        db.create_all()
        engage.create_all()
        client = host.test_client()
        page = client.get("/admin/engage/customers/").get_data(as_text=True)
        assert "Host admin" in page
        for name in ("Engage", "Customers", "Segments", "Broadcasts", "Automations"):
            assert f"{name}</a>" in page
        assert client.get("/admin/engage/dashboard/").status_code == 200
        assert client.get("/engage/admin/").status_code == 404
        db.session.remove()
        db.engine.dispose()


def test_production_refuses_anonymous(app, data, client):
    app.testing = False
    app.debug = False
    assert app.config["ENGAGE_ADMIN_ACCESS"] is None
    for method, url in admin_urls(app, data):
        response = client.open(url, method=method, data={"csrf_token": "x"})
        assert response.status_code == 403, (method, url, response.status_code)


def test_access_callable_decides(app, data, client):
    urls = admin_urls(app, data)
    paths = {path for _, path in urls}
    for part in (
        "",
        "customers/",
        "segments/",
        "segments/new",
        "segments/count",
        "broadcasts/new",
        "automations/new",
        f"broadcasts/{data['broadcast_id']}/counts",
        f"segments/{data['segment_id']}/recompute",
    ):
        assert f"{ADMIN}/{part}" in paths
    assert len(urls) >= 25
    app.testing = False
    app.config["ENGAGE_ADMIN_ACCESS"] = lambda: False
    assert client.get(f"{ADMIN}/").status_code == 403
    app.config["ENGAGE_ADMIN_ACCESS"] = lambda: True
    for method, url in admin_urls(app, data):
        if method == "GET":
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)
    page = client.get(f"{ADMIN}/").get_data(as_text=True)
    for name in ("Customers", "Segments", "Lists", "Broadcasts", "Automations", "Dashboard"):
        assert f"{name}</a>" in page


def test_every_post_needs_the_csrf_token(app, data, client):
    posts = [url for method, url in admin_urls(app, data) if method == "POST"]
    assert len(posts) >= 9
    with client.session_transaction() as session:
        session["_engage_admin_csrf"] = TOKEN
    for url in posts:
        missing = client.post(url, data={"name": "X", "filters": "{}"})
        wrong = client.post(url, data={"csrf_token": "wrong", "name": "X"})
        json_wrong = client.post(
            url, json={"filters": {"all": []}}, headers={"X-CSRFToken": "nope"}
        )
        for response in (missing, wrong, json_wrong):
            assert response.status_code == 400, (url, response.status_code)
            assert b"csrf" in response.data.lower()
    # nothing happened: the broadcast is still a draft, the automation still active
    assert db.session.get(Broadcast, data["broadcast_id"]).status == "draft"
    assert (
        client.get(f"{ADMIN}/automations/{data['automation_id']}")
        .get_data(as_text=True)
        .count("active")
    )


def test_host_routes_are_not_csrf_protected(app, client):
    @app.post("/host-form")
    def host_form():
        return "ok"

    assert client.post("/host-form").status_code == 200


@pytest.fixture
def csrf_client(client):
    with client.session_transaction() as session:
        session["_engage_admin_csrf"] = TOKEN
    return client


def test_live_count_and_invalid_filter_path(app, data, csrf_client):
    url = f"{ADMIN}/segments/count"
    ok = csrf_client.post(
        url,
        json={"filters": {"attribute": "city", "op": "eq", "value": "Lagos"}},
        headers={"X-CSRFToken": TOKEN},
    )
    assert ok.status_code == 200
    assert ok.get_json() == {"count": 1, "total": 1, "percent": 100.0}
    bad = csrf_client.post(
        url,
        headers={"X-CSRFToken": TOKEN},
        json={
            "filters": {
                "all": [
                    {"attribute": "city", "op": "eq", "value": "x"},
                    {"attribute": "plan", "op": "equals", "value": "pro"},
                ]
            }
        },
    )
    assert bad.status_code == 400
    assert bad.get_json()["field"] == "filters.all[1].op"
    garbage = csrf_client.post(
        url, data="not json", headers={"X-CSRFToken": TOKEN, "Content-Type": "application/json"}
    )
    assert garbage.status_code == 400 and garbage.get_json()["field"] == "filters"


def test_segment_builder_saves_and_flashes_errors(app, data, csrf_client):
    page = csrf_client.get(f"{ADMIN}/segments/new").get_data(as_text=True)
    assert "engage-builder-data" in page and '"plan": "string"' in page and "Purchase" in page
    bad = csrf_client.post(
        f"{ADMIN}/segments/new",
        data={
            "csrf_token": TOKEN,
            "name": "Broken",
            "filters": '{"attribute": "plan", "op": "nope"}',
        },
    )
    assert bad.status_code == 400
    assert "filters.op: unknown operator" in bad.get_data(as_text=True)
    assert db.session.query(Segment).filter_by(name="Broken").count() == 0
    saved = csrf_client.post(
        f"{ADMIN}/segments/new",
        data={
            "csrf_token": TOKEN,
            "name": "Lagos buyers",
            "filters": '{"all": [{"attribute": "city", "op": "eq", "value": "Lagos"},'
            ' {"event": "Purchase", "count": {"op": "gte", "value": 1}}]}',
        },
        follow_redirects=True,
    )
    assert saved.status_code == 200
    body = saved.get_data(as_text=True)
    assert "Lagos buyers" in body and "ada@example.com" in body and "<svg" in body
    segment = engage.get_segment("lagos-buyers")
    assert [c.external_id for c in engage.members(segment)] == ["1"]
    recompute = csrf_client.post(
        f"{ADMIN}/segments/{segment.id}/recompute",
        data={"csrf_token": TOKEN},
        follow_redirects=True,
    )
    assert "Recomputed Lagos buyers" in recompute.get_data(as_text=True)


def test_broadcast_compose_preview_test_and_send(app, data, csrf_client):
    mail = app.extensions["mail"]
    with mail.record_messages() as outbox:
        created = csrf_client.post(
            f"{ADMIN}/broadcasts/new",
            data={
                "csrf_token": TOKEN,
                "name": "Lagos news",
                "channel": "email",
                "segments": [str(data["segment_id"])],
                "subject": "News for {{ customer.city }}",
                "body": "Hello from {{ customer.city }}",
                "action": "draft",
            },
            follow_redirects=True,
        )
        page = created.get_data(as_text=True)
        assert "News for Lagos" in page and "draft" in page
        broadcast_id = int(re.search(r"/broadcasts/(\d+)/send", page).group(1))
        csrf_client.post(
            f"{ADMIN}/broadcasts/{broadcast_id}/test",
            data={"csrf_token": TOKEN, "email": "me@example.com"},
        )
        assert [m.recipients for m in outbox] == [["me@example.com"]]
        assert outbox[0].subject == "[Test] News for Lagos"
        sent = csrf_client.post(
            f"{ADMIN}/broadcasts/{broadcast_id}/send",
            data={"csrf_token": TOKEN},
            follow_redirects=True,
        )
        assert sent.status_code == 200
    assert [m.recipients for m in outbox[1:]] == [["ada@example.com"]]
    counts = csrf_client.get(f"{ADMIN}/broadcasts/{broadcast_id}/counts").get_json()
    assert counts["status"] == "sent" and counts["counts"]["sent"] == 1
    bad = csrf_client.post(
        f"{ADMIN}/broadcasts/new",
        data={
            "csrf_token": TOKEN,
            "name": "No subject",
            "channel": "email",
            "segments": [str(data["segment_id"])],
            "body": "x",
        },
    )
    assert bad.status_code == 400 and "subject: a email broadcast needs a subject" in bad.get_data(
        as_text=True
    )


def test_automation_edit_toggle_and_errors(app, data, csrf_client):
    url = f"{ADMIN}/automations/new"
    bad = csrf_client.post(
        url,
        data={
            "csrf_token": TOKEN,
            "name": "Bad",
            "trigger_kind": "joins",
            "segment": str(data["segment_id"]),
            "steps": '[{"send": {"channel": "fax", "body": "x"}}]',
        },
    )
    assert bad.status_code == 400 and "steps[0].send.channel" in bad.get_data(as_text=True)
    ok = csrf_client.post(
        url,
        data={
            "csrf_token": TOKEN,
            "name": "Nudge",
            "trigger_kind": "joins",
            "segment": str(data["segment_id"]),
            "active": "on",
            "steps": '[{"wait": {"days": 2}}, {"send": {"channel": "in_app", "body": "Hi"}}]',
        },
        follow_redirects=True,
    )
    page = ok.get_data(as_text=True)
    assert "Wait 2 days" in page and "Send in_app" in page
    automation_id = int(re.search(r"/automations/(\d+)/toggle", page).group(1))
    paused = csrf_client.post(
        f"{ADMIN}/automations/{automation_id}/toggle",
        data={"csrf_token": TOKEN},
        follow_redirects=True,
    )
    assert "is paused" in paused.get_data(as_text=True)


def test_pages_render_without_customers(app, csrf_client):
    for path in (
        "/",
        "/customers/",
        "/segments/",
        "/segments/new",
        "/broadcasts/",
        "/broadcasts/new",
        "/automations/",
        "/automations/new",
    ):
        assert csrf_client.get(ADMIN + path).status_code == 200, path
    all_segment = engage.get_segment("all")
    assert csrf_client.get(f"{ADMIN}/segments/{all_segment.id}").status_code == 200


def bulk_insert_customers(n: int) -> None:
    """``n`` customers in one INSERT ... SELECT (generate_series / a recursive CTE)."""
    engine = db.engine
    plan = "CASE WHEN i % 10 = 0 THEN 'pro' ELSE 'free' END"
    attributes = f'\'{{"plan": "\' || {plan} || \'", "city": "Lagos"}}\''
    if engine.dialect.name == "postgresql":
        sql = (
            "INSERT INTO engage_customers (external_id, email, attributes, created_at, updated_at) "
            f"SELECT 'bulk' || i, 'user' || i || '@example.com', ({attributes})::jsonb, "
            "now(), now() "
            f"FROM generate_series(1, {n}) AS i"
        )
    else:
        sql = (
            f"WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {n}) "
            "INSERT INTO engage_customers (external_id, email, attributes, created_at, updated_at) "
            f"SELECT 'bulk' || i, 'user' || i || '@example.com', {attributes}, "
            "datetime('now'), datetime('now') FROM seq"
        )
    with engine.begin() as conn:
        conn.execute(text(sql))


def test_customers_list_is_fast_with_100k_customers(app, db_kind, csrf_client):
    bulk_insert_customers(100_000)
    csrf_client.get(f"{ADMIN}/customers/")  # warm up
    started = time.perf_counter()
    page = csrf_client.get(f"{ADMIN}/customers/")
    first = time.perf_counter() - started
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "100000" in body and "bulk100000" in body
    before = re.search(r"before=(\d+)", body).group(1)
    started = time.perf_counter()
    second = csrf_client.get(f"{ADMIN}/customers/?before={before}")
    deep = time.perf_counter() - started
    assert "bulk99950" in second.get_data(as_text=True)
    started = time.perf_counter()
    search = csrf_client.get(f"{ADMIN}/customers/?q=user77777@")
    searched = time.perf_counter() - started
    assert "bulk77777" in search.get_data(as_text=True)
    print(
        f"\n[{db_kind}] customers list with 100k: first page {first * 1000:.0f} ms, "
        f"next page {deep * 1000:.0f} ms, email search {searched * 1000:.0f} ms"
    )
    if db_kind == "postgresql":
        assert first < 1.0 and deep < 1.0
    for path in ("/", "/segments/", "/segments/new"):
        assert csrf_client.get(ADMIN + path).status_code == 200
    count = csrf_client.post(
        f"{ADMIN}/segments/count",
        headers={"X-CSRFToken": TOKEN},
        json={"filters": {"attribute": "plan", "op": "eq", "value": "pro"}},
    )
    assert count.get_json() == {"count": 10_000, "total": 100_000, "percent": 10.0}


def test_customers_list_filters_by_segment(app, data, client):
    engage.identify("free-one", email="free@example.com", plan="free")
    db.session.commit()
    everyone = client.get(f"{ADMIN}/customers/").get_data(as_text=True)
    assert "ada@example.com" in everyone and "free@example.com" in everyone
    pro_only = client.get(f"{ADMIN}/customers/?segment={data['segment_id']}").get_data(as_text=True)
    assert "ada@example.com" in pro_only and "free@example.com" not in pro_only
    assert 'selected>In Pro</option>' in pro_only


def test_deleting_an_automation_cancels_its_runs(app, data, csrf_client):
    from flask_engage.models import Automation, AutomationRun

    url = f"{ADMIN}/automations/{data['automation_id']}/delete"
    page = csrf_client.get(f"{ADMIN}/automations/{data['automation_id']}").get_data(as_text=True)
    assert url in page
    response = csrf_client.post(url, data={"csrf_token": TOKEN}, follow_redirects=True)
    assert response.status_code == 200
    assert "deleted" in response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Automation, data["automation_id"]) is None
    live = db.session.query(AutomationRun).filter(AutomationRun.status.in_(("active", "waiting")))
    assert live.count() == 0
