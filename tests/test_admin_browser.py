"""The admin in a real browser: build a segment by clicking, watch the live count,
save it, see its members, then send it a broadcast. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from flask_engage.models import Message
from tests.hostapp import Order, User, db, engage

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
SEGMENT_NAME = "Pro customers in Lagos who purchased more than 3 times in 30 days"

#: Marks of every browser test module: Chromium, on SQLite.
BROWSER_TESTS = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium"),
    pytest.mark.parametrize("db_kind", ["sqlite"]),
]
pytestmark = BROWSER_TESTS


@pytest.fixture
def server(app):
    """The app served on 127.0.0.1 (free port) from a thread."""
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.server_port}"
    http.shutdown()
    thread.join(5)


@pytest.fixture
def page(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=server)
        context.set_default_timeout(10_000)
        yield context.new_page()
        browser.close()


def seed() -> None:
    """Five customers; only 1 and 5 are pro, in Lagos, with more than 3 purchases."""
    people = [
        (1, "pro", "Lagos", 4),
        (2, "pro", "Lagos", 2),
        (3, "free", "Lagos", 5),
        (4, "pro", "Abuja", 5),
        (5, "pro", "Lagos", 5),
    ]
    for user_id, plan, city, purchases in people:
        db.session.add(User(id=user_id, email=f"user{user_id}@example.com", plan=plan, city=city))
        db.session.flush()
        db.session.add_all(Order(user_id=user_id, amount=10) for _ in range(purchases))
    db.session.commit()


def add_condition(page, kind: str):
    """Click "+ kind" on the root group; the new condition is the last of its kind."""
    page.locator('[data-path="filters"] > .row-line .add-' + kind).click()
    return page.locator(f".{kind}-condition").last


def test_build_segment_and_send_broadcast(app, page):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    seed()
    preview = page.locator("#engage-preview")
    page.goto("/engage/admin/segments/new")
    expect(preview).to_have_attribute("data-count", "5")

    plan = add_condition(page, "attribute")
    plan.locator(".attr-name").fill("plan")
    plan.locator("select.op").select_option("eq")
    plan.locator("input.value").fill("pro")
    expect(preview).to_have_attribute("data-count", "4")
    expect(preview).to_contain_text("Matches 4 customers (80.0% of all 5)")

    city = add_condition(page, "attribute")
    city.locator(".attr-name").fill("city")
    city.locator("select.op").select_option("eq")
    city.locator("input.value").fill("Lagos")
    expect(preview).to_have_attribute("data-count", "3")

    purchase = add_condition(page, "event")
    purchase.locator(".event-name").fill("Purchase")
    purchase.locator("select.measure").select_option("count")
    purchase.locator("select.measure-op").select_option("gt")
    purchase.locator("input.measure-value").fill("3")
    purchase.locator("select.window-kind").select_option("last_days")
    purchase.locator("input.window-value").fill("30")
    expect(preview).to_have_attribute("data-count", "2")
    expect(preview).to_contain_text("40.0% of all")

    # a wrong value is shown next to the condition that is wrong
    purchase.locator("input.measure-value").fill("")
    expect(purchase).to_have_class("node condition event-condition invalid")
    expect(purchase.locator(".node-error")).to_contain_text("count.value")
    purchase.locator("input.measure-value").fill("3")
    expect(preview).to_have_attribute("data-count", "2")
    shown = json.loads(page.locator("#filters-json").input_value())
    assert shown == {
        "all": [
            {"attribute": "plan", "op": "eq", "value": "pro"},
            {"attribute": "city", "op": "eq", "value": "Lagos"},
            {"event": "Purchase", "count": {"op": "gt", "value": 3}, "window": {"last_days": 30}},
        ]
    }
    page.screenshot(path=str(ARTIFACTS / "segment_builder.png"), full_page=True)

    page.fill("#name", SEGMENT_NAME)
    page.click("#save-segment")
    expect(page.locator("h2").first).to_contain_text(SEGMENT_NAME)
    members = page.locator("#members")
    expect(members).to_contain_text("user1@example.com")
    expect(members).to_contain_text("user5@example.com")
    expect(members).not_to_contain_text("user2@example.com")
    expect(page.locator("#segment-chart svg polyline")).to_have_count(1)
    page.screenshot(path=str(ARTIFACTS / "segment_chart.png"), full_page=True)
    segment = engage.get_segment(
        "pro-customers-in-lagos-who-purchased-more-than-3-times-in-30-days"
    )
    assert sorted(c.external_id for c in engage.members(segment)) == ["1", "5"]

    mail = app.extensions["mail"]
    with mail.record_messages() as outbox:
        page.click("text=New broadcast to this segment")
        page.fill("#name", "Lagos pro offer")
        page.fill("#subject", "An offer for {{ customer.city }}")
        page.fill("#body", "<p>Hello {{ customer.email }}, thanks for buying.</p>")
        page.click("#send-now")
        # Sending asks first, naming the number of recipients (issue 17).
        expect(page.locator("#confirm-send")).to_have_text("Send to 2 customers")
        page.click("#confirm-send")
        expect(page.locator("#broadcast-status")).to_have_text("sent")
        expect(page.locator("#messages")).to_contain_text("sent")
    assert sorted(m.recipients[0] for m in outbox) == ["user1@example.com", "user5@example.com"]
    assert {m.subject for m in outbox} == {"An offer for Lagos"}
    db.session.expire_all()
    statuses = db.session.scalars(
        select(Message.status).where(Message.broadcast_id.is_not(None))
    ).all()
    assert sorted(statuses) == ["sent", "sent"]
    expect(page.locator("#preview-subject")).to_have_text("An offer for Lagos")
    page.screenshot(path=str(ARTIFACTS / "broadcast.png"), full_page=True)
