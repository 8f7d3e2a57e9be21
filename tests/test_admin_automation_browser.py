"""The automation editor in a real browser, on a desktop screen and at 390 px (issue 19):
a "wait for an event" step and an if/otherwise step are built as forms, with the
steps of each arm nested under them, and saved without typing JSON."""

from __future__ import annotations

from sqlalchemy import select

from flask_engage.models import Automation
from tests.hostapp import db, engage
from tests.test_admin_browser import BROWSER_TESTS, CHROMIUM, server  # noqa: F401 (fixture)
from tests.test_admin_browser_safe import page, screen, shot  # noqa: F401 (fixtures)

pytestmark = BROWSER_TESTS


def test_wait_for_an_event_and_if_otherwise_without_json(app, page, screen):  # noqa: F811
    from playwright.sync_api import expect

    engage.identify("c-1", email="ada@example.com", first_name="Ada", plan="pro")
    engage.track("c-1", "Purchase", {"amount": 120})
    db.session.commit()
    engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})

    page.goto("/engage/admin/automations/new")
    page.fill("#name", "Nudge to buy")
    page.select_option("#segment", label="Pro")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(".step-card").first.locator(".step-remove").click()  # the default wait
    expect(page.locator(".step-card")).to_have_count(0)

    page.click("#add-steps .add-step-wait_for")
    waiting = page.locator('.step-card[data-index="0"]')
    expect(waiting.locator(".step-title")).to_have_text("1. Wait for an event")
    waiting.locator(".wait-for-event").fill("Purchase")
    waiting.locator(".wait-amount").first.fill("2")
    waiting.locator(".wait-unit").first.select_option("days")
    waiting.locator('.step-arm[data-arm="then"] .add-step-send').first.click()
    else_arm = page.locator('.step-card[data-index="0"] .step-arm[data-arm="else"]')
    else_arm.locator(".add-step-branch").first.click()

    thanks = page.locator('.step-card[data-index="0"] .step-arm[data-arm="then"] .step-card')
    expect(thanks).to_have_count(1)
    thanks.locator(".send-channel").select_option("in_app")
    thanks.locator(".send-body").fill("Thanks for your order!")

    branch = page.locator(
        '.step-card[data-index="0"] .step-arm[data-arm="else"] .step-card[data-kind="branch"]'
    )
    expect(branch.locator(".step-title")).to_have_text("1. If / otherwise")
    branch.locator(".add-attribute").first.click()
    condition = branch.locator(".attribute-condition").first
    condition.locator(".attr-name").fill("plan")
    condition.locator("select.op").select_option("eq")
    condition.locator("input.value").fill("pro")
    expect(branch.locator(".step-count")).to_have_attribute("data-count", "1")
    branch.locator('.step-arm[data-arm="then"] .add-step-send').first.click()
    nudge = branch.locator('.step-arm[data-arm="then"] .step-card')
    nudge.locator(".send-channel").select_option("in_app")
    nudge.locator(".send-body").fill("Pro members get free shipping")
    branch.locator('.step-arm[data-arm="else"] .add-step-exit').first.click()
    shot(page, screen, "automation_branches")

    page.click("#save-automation")
    expect(page.locator("h2").first).to_contain_text("Nudge to buy")
    db.session.expire_all()
    automation = db.session.scalars(select(Automation)).one()
    assert automation.steps == [
        {
            "wait_for": {
                "event": "Purchase",
                "days": 2,
                "then": [{"send": {"channel": "in_app", "body": "Thanks for your order!"}}],
                "else": [
                    {
                        "branch": {
                            "if": {"all": [{"attribute": "plan", "op": "eq", "value": "pro"}]},
                            "then": [
                                {
                                    "send": {
                                        "channel": "in_app",
                                        "body": "Pro members get free shipping",
                                    }
                                }
                            ],
                            "else": [{"exit": True}],
                        }
                    }
                ],
            }
        }
    ]
    # the detail page lists the nested steps in order, by program position
    steps = page.locator("#steps tbody tr")
    expect(steps).to_have_count(5)
    expect(steps.nth(1)).to_contain_text("then")
    expect(steps.nth(2)).to_contain_text("otherwise")

    # and the editor shows them again
    page.goto(f"/engage/admin/automations/{automation.id}/edit")
    expect(page.locator('.step-card[data-kind="branch"] .attr-name')).to_have_value("plan")
    expect(page.locator(".wait-for-event")).to_have_value("Purchase")
