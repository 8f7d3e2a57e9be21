"""Safe sending and a marketer's admin in a real browser (issue 17), on a desktop screen
and at 390 px: the edit-impact dialog, the send confirmation naming the number, a
broadcast blocked before sending, the KYC automation built without typing JSON, and a
warning for a typo'd attribute. Pages must fit the phone's width (tables scroll inside
their card). Screenshots go to tests/artifacts/ (the docs' images are taken from there).
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from flask_engage.models import Automation, Message, utcnow
from tests.hostapp import User, db, engage
from tests.test_admin_browser import ARTIFACTS, BROWSER_TESTS, CHROMIUM, server  # noqa: F401 (fixture)

SCREENS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
PRO = {"attribute": "plan", "op": "eq", "value": "pro"}
KYC_PENDING = {
    "all": [
        {"event": "Signed up", "window": {"older_than_days": 3}},
        {"event": "Completed KYC", "count": {"op": "eq", "value": 0}},
    ]
}

pytestmark = BROWSER_TESTS


@pytest.fixture(params=list(SCREENS))
def screen(request) -> str:
    return request.param


@pytest.fixture
def page(server, screen):  # noqa: F811
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        context = browser.new_context(
            viewport=SCREENS[screen], base_url=server, is_mobile=screen == "phone"
        )
        context.set_default_timeout(10_000)
        yield context.new_page()
        browser.close()


def shot(page, screen: str, name: str) -> None:
    """A screenshot, and at 390 px a check that the page does not scroll sideways."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}_{screen}.png"), full_page=True)
    if screen == "phone":
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name}: the page is {overflow}px wider than the phone"


def messages() -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(Message)) or 0


def pro_customers() -> None:
    """Four pro customers (two in Lagos), one free; "Pro" and its leave automation."""
    people = [("pro", "Lagos"), ("pro", "Lagos"), ("pro", "Abuja"), ("pro", "Accra")]
    for number, (plan, city) in enumerate([*people, ("free", "Lagos")], 1):
        db.session.add(User(id=number, email=f"u{number}@example.com", plan=plan, city=city))
    db.session.commit()
    pro = engage.create_segment("Customers on the Pro plan", PRO)
    engage.create_automation(
        "Sorry to see you leave Pro",
        trigger={"leaves": pro},
        steps=[{"send": {"channel": "email", "subject": "Sorry", "body": "Come back soon"}}],
    )


def add_city_condition(page, value: str = "Lagos") -> None:
    page.locator('[data-path="filters"] > .row-line .add-attribute').click()
    city = page.locator(".attribute-condition").last
    city.locator(".attr-name").fill("city")
    city.locator("select.op").select_option("eq")
    city.locator("input.value").fill(value)


@pytest.mark.parametrize("run_automations", [False, True], ids=["quiet", "opted-in"])
def test_the_edit_impact_dialog(app, page, screen, run_automations):
    from playwright.sync_api import expect

    pro_customers()
    not_lagos = {"attribute": "city", "op": "ne", "value": "Lagos"}
    built_on = [{"segment": "customers-on-the-pro-plan", "op": "in"}, not_lagos]
    engage.create_segment("Pro elsewhere", {"all": built_on})
    segment = engage.get_segment("customers-on-the-pro-plan")
    page.goto(f"/engage/admin/segments/{segment.id}/edit")
    expect(page.locator("#engage-preview")).to_have_attribute("data-count", "4")
    add_city_condition(page)
    expect(page.locator("#engage-preview")).to_have_attribute("data-count", "2")
    page.click("#save-segment")
    dialog = page.locator("#impact-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("0 customer(s) will join and 2 will leave this segment")
    expect(dialog).to_contain_text("Sorry to see you leave Pro would start for 2 customer(s)")
    expect(dialog).to_contain_text("built on it change with it: Pro elsewhere (0 join, 2 leave)")
    expect(page.locator("#trigger_automations")).not_to_be_checked()
    if not run_automations:
        shot(page, screen, "segment_impact")
    else:
        page.check("#trigger_automations")
    page.click("#impact-save")
    expect(page.locator("#member-count")).to_have_text("2")
    expected = 2 if run_automations else 0
    assert messages() == expected
    if not run_automations:
        expect(page.locator(".engage-flash")).to_contain_text("Automations were not started")
        shot(page, screen, "segment_detail")


def test_send_confirmation_names_the_number(app, page, screen):
    from playwright.sync_api import expect

    pro_customers()
    engage.unsubscribe(4)
    segment = engage.get_segment("customers-on-the-pro-plan")
    page.goto(f"/engage/admin/broadcasts/new?segment={segment.id}")
    page.fill("#name", "Card cashback week")
    page.fill("#subject", "Cashback for {{ customer.email }}")
    page.fill("#body", "<p>Hello {{ customer.email }}: 5% back on card payments.</p>")
    expect(page.locator("#send-now")).to_have_text("Send now…")
    shot(page, screen, "broadcast_form")
    page.click("#send-now")
    dialog = page.locator("#send-dialog")
    title = "Send “Card cashback week” now to 3 customers?"
    expect(dialog.locator("#send-title")).to_have_text(title)
    expect(dialog).to_contain_text(
        "4 customers are in its segments; of them 1 unsubscribed (not sent to)"
    )
    expect(page.locator("#confirm-send")).to_have_text("Send to 3 customers")
    shot(page, screen, "broadcast_confirm")
    page.click("#cancel-send")
    assert messages() == 0, "nothing is sent before confirming"

    page.fill("#scheduled_at", "2020-01-01T09:00")
    expect(page.locator("#send-now")).to_have_text("Schedule…")
    page.click("#send-now")
    expect(page.locator("#send-dialog")).to_contain_text("has already passed")
    expect(page.locator("#confirm-send")).to_be_disabled()
    page.click("#cancel-send")
    page.fill("#scheduled_at", "")

    mail = app.extensions["mail"]
    with mail.record_messages() as outbox:
        page.click("#send-now")
        expect(page.locator("#confirm-send")).to_have_text("Send to 3 customers")
        page.click("#confirm-send")
        expect(page.locator("#broadcast-status")).to_have_text("sent")
        expect(page.locator(".engage-flash")).to_contain_text("sent to 3 customer(s)")
    assert sorted(m.recipients[0] for m in outbox) == [f"u{n}@example.com" for n in (1, 2, 3)]
    shot(page, screen, "broadcast_sent")


FAILING = "<p>Your balance: {{ customer.balance|round }}</p>"  # no customer has a balance


def test_a_broadcast_that_fails_for_everyone(app, page, screen):
    from playwright.sync_api import expect

    pro_customers()
    draft = engage.create_broadcast("Balance update", channel="email",
                                    segments=["customers-on-the-pro-plan"], subject="Balance",
                                    body=FAILING)
    page.goto(f"/engage/admin/broadcasts/{draft.id}")
    expect(page.locator("#estimate")).to_contain_text("4 customer(s) would get it now")
    expect(page.locator("#preview-error")).to_contain_text("The template fails")
    page.click("#send-now")
    blocked = page.locator("#send-blocked")
    expect(blocked).to_contain_text("could not be written for 4 of 4 sampled recipients")
    expect(blocked).to_contain_text("a value it uses is missing")
    expect(page.locator("#confirm-send")).to_be_disabled()
    shot(page, screen, "broadcast_blocked")
    page.click("#cancel-send")
    assert messages() == 0

    engage.send_broadcast(draft)  # forced through the Python API: it sends, and fails
    page.reload()
    badge = page.locator("#broadcast-status")
    expect(badge).to_have_text("failed")
    expect(badge).to_have_class("badge badge-danger")
    colour = badge.evaluate("node => getComputedStyle(node).backgroundColor")
    assert colour == "rgb(220, 53, 69)", colour  # Bootstrap's danger red
    expect(page.locator("#broadcast-failed")).to_contain_text("Nobody received this broadcast")
    expect(page.locator("#broadcast-failed")).to_contain_text("4 ×")
    shot(page, screen, "broadcast_failed")


def kyc_data() -> None:
    """Three customers who signed up 5 days ago; one of them completed KYC."""
    for number, name in enumerate(("Ada", "Bola", "Chidi"), 1):
        engage.identify(number, email=f"{name.lower()}@example.com", first_name=name)
        engage.track(number, "Signed up", timestamp=utcnow() - timedelta(days=5))
    engage.track(3, "Completed KYC", {"method": "BVN"})
    db.session.commit()
    engage.create_segment("KYC pending after 3 days", KYC_PENDING)


def test_building_the_kyc_reminder_without_json(app, page, screen):
    from playwright.sync_api import expect

    kyc_data()
    page.goto("/engage/admin/automations/new")
    page.fill("#name", "KYC reminder")
    page.select_option("#trigger_kind", "joins")
    page.select_option("#segment", label="KYC pending after 3 days")

    wait = page.locator(".step-card").nth(0)
    wait.locator(".wait-amount").fill("3")
    wait.locator(".wait-unit").select_option("days")

    page.click(".add-step-if")
    condition = page.locator(".step-card").nth(1)
    condition.locator(".add-event").first.click()
    event = condition.locator(".event-condition")
    event.locator(".event-name").fill("Completed KYC")
    event.locator("select.event-did").select_option("did_not")
    expect(condition.locator(".step-count")).to_have_attribute("data-count", "2")

    page.click(".add-step-send")
    send = page.locator(".step-card").nth(2)
    send.locator(".send-channel").select_option("email")
    send.locator(".send-subject").fill("{{ customer.first_name }}, finish your KYC")
    page.click("#save-automation")  # no message yet: the error shows on that step
    send = page.locator(".step-card").nth(2)
    expect(send.locator(".step-error")).to_contain_text("Step 3 › body: A message needs a body")
    expect(send.locator(".send-body")).to_have_class(re.compile(r"\bis-invalid\b"))
    expect(page.locator("#name")).to_have_value("KYC reminder")
    expect(page.locator(".step-card").nth(0).locator(".wait-amount")).to_have_value("3")
    send.locator(".send-body").fill(
        "Hi {{ customer.first_name }}, verify your identity in two minutes to unlock your card."
    )
    send.locator(".send-preview").click()
    expect(send.locator(".send-preview-box")).to_contain_text("Ada, finish your KYC")
    send.locator(".send-customer").fill("bola@example.com")
    send.locator(".send-preview").click()
    expect(send.locator(".send-preview-box")).to_contain_text("Bola, finish your KYC")
    shot(page, screen, "automation_editor")

    # reorder and delete: move the send up, back down, then remove and re-add nothing
    send.locator(".step-up").click()
    expect(page.locator(".step-card").nth(1)).to_have_attribute("data-kind", "send")
    page.locator(".step-card").nth(1).locator(".step-down").click()
    expect(page.locator(".step-card").nth(2)).to_have_attribute("data-kind", "send")
    page.click(".add-step-exit")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(".step-card").nth(3).locator(".step-remove").click()
    expect(page.locator(".step-card")).to_have_count(3)

    page.click("#save-automation")
    expect(page.locator("h2").first).to_contain_text("KYC reminder")
    shot(page, screen, "automation_detail")
    db.session.expire_all()
    automation = db.session.scalars(select(Automation)).one()
    assert automation.trigger_kind == "joins"
    assert automation.steps == [
        {"wait": {"days": 3}},
        {"if": {"all": [{"event": "Completed KYC", "count": {"op": "eq", "value": 0}}]}},
        {
            "send": {
                "channel": "email",
                "subject": "{{ customer.first_name }}, finish your KYC",
                "body": "Hi {{ customer.first_name }}, verify your identity in two minutes to "
                "unlock your card.",
            }
        },
    ]


def test_a_typo_in_an_attribute_name_shows_a_warning(app, page, screen):
    from playwright.sync_api import expect

    pro_customers()
    page.goto("/engage/admin/segments/new")
    expect(page.locator("#engage-preview")).to_have_attribute("data-count", "5")
    page.locator('[data-path="filters"] > .row-line .add-attribute').click()
    row = page.locator(".attribute-condition").last
    expect(row.locator(".node-error")).to_have_count(0)  # nothing shouted before typing
    row.locator(".attr-name").fill("cty")
    warning = row.locator(".node-warning")
    expect(warning).to_contain_text("No customer has an attribute called “cty” yet.")
    expect(warning).to_contain_text("Did you mean “city”?")
    row.locator("input.value").fill("lagos")
    shot(page, screen, "builder_typo")
    row.locator(".use-name").click()
    row = page.locator(".attribute-condition").last
    expect(row.locator(".attr-name")).to_have_value("city")
    expect(row.locator('[data-key="value"]')).to_contain_text(
        "No customer has city “lagos”, but 3 have “Lagos” (letter case matters)."
    )
    row.locator(".use-value").click()
    expect(page.locator("#engage-preview")).to_have_attribute("data-count", "3")
    expect(page.locator(".node-warning")).to_have_count(0)


def test_a_test_sends_unsubscribe_link_unsubscribes_nobody(app, page, screen):
    from playwright.sync_api import expect

    pro_customers()
    draft = engage.create_broadcast(
        "Card news", channel="email", segments=["customers-on-the-pro-plan"],
        subject="News for {{ customer.email }}", body="<p>Hello {{ customer.email }}</p>",
    )
    page.goto(f"/engage/admin/broadcasts/{draft.id}")
    page.fill("#test-email", "marketer@example.com")
    page.fill("#test-customer", "u2@example.com")
    mail = app.extensions["mail"]
    with mail.record_messages() as outbox:
        page.locator("#test-customer").press("Enter")
        expect(page.locator(".engage-flash")).to_contain_text(
            "Test sent to marketer@example.com, written for u2@example.com."
        )
    (test,) = outbox
    assert test.recipients == ["marketer@example.com"]
    assert test.subject == "[Test] News for u2@example.com"
    link = test.extra_headers["List-Unsubscribe"].strip("<>")
    assert link in test.html
    page.goto(link.replace("https://app.example.com", ""))
    expect(page.locator("h1")).to_have_text("This was a test message")
    expect(page.locator("body")).to_contain_text("unsubscribes nobody")
    one_click = page.request.post(link.replace("https://app.example.com", ""))
    assert one_click.status == 200
    assert engage.count({"channel": "email", "op": "unsubscribed"}) == 0
    assert messages() == 0


def test_every_page_fits_the_screen(app, page, screen):
    """Each page of the admin, with data, at both sizes: nothing runs off a phone."""
    pro_customers()
    kyc_data()
    engage.track(1, "Purchase", {"amount": 25})
    db.session.commit()
    segment = engage.get_segment("customers-on-the-pro-plan")
    broadcast = engage.create_broadcast(
        "Card cashback week", channel="email", segments=[segment], subject="Cashback",
        body="<p>Hi {{ customer.email }}</p>",
    )
    engage.send_broadcast(broadcast)
    automation = db.session.scalars(select(Automation)).first()
    customer = engage.get_customer(1)
    for name, path in [
        ("dashboard", "/engage/admin/"),
        ("customers", "/engage/admin/customers/"),
        ("customer", f"/engage/admin/customers/{customer.id}"),
        ("segments", "/engage/admin/segments/"),
        ("broadcasts", "/engage/admin/broadcasts/"),
        ("broadcast_page", f"/engage/admin/broadcasts/{broadcast.id}"),
        ("automations", "/engage/admin/automations/"),
        ("automation", f"/engage/admin/automations/{automation.id}"),
    ]:
        page.goto(path)
        page.wait_for_load_state("networkidle")
        shot(page, screen, f"page_{name}")
