"""The automation editor in a real browser builds branching automations without JSON:
a list trigger, a "wait for an event" step and an if/otherwise step, each with two
arms of steps; an error inside an arm shows on that step."""

from __future__ import annotations

import os
import re

import pytest
from sqlalchemy import select

from flask_engage.models import Automation
from tests.hostapp import db, engage
from tests.test_admin_browser import CHROMIUM, page, server  # noqa: F401 (fixtures)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium"),
    pytest.mark.parametrize("db_kind", ["sqlite"]),
]


def test_building_a_branching_automation(app, page):  # noqa: F811
    from playwright.sync_api import expect

    engage.create_list("Newsletter")
    engage.track(1, "Completed KYC")
    db.session.commit()

    page.goto("/engage/admin/automations/new")
    page.fill("#name", "Onboarding")
    expect(page.locator("#customer_list")).to_be_hidden()
    page.select_option("#trigger_kind", "subscribes")
    expect(page.locator("#segment")).to_be_hidden()
    page.select_option("#customer_list", label="Newsletter")

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(".step-card").nth(0).locator(".step-remove").click()  # the default wait
    page.click("#add-steps .add-step-wait_for")
    waiting = page.locator('.step-card[data-path="steps[0]"]')
    waiting.locator(".wait-for-event").fill("Completed KYC")
    waiting.locator(".wait-for-amount").fill("2")
    arms = waiting.locator(".step-arm")
    arms.nth(0).locator(".arm-add .add-step-send").click()
    thanks = page.locator('.step-card[data-path="steps[0].then[0]"]')
    expect(thanks.locator(".step-title")).to_have_text("1.1. Send a message")
    thanks.locator(".send-channel").select_option("in_app")

    arms = page.locator('.step-card[data-path="steps[0]"] > .card-body .step-arm')
    arms.nth(1).locator(".arm-add .add-step-branch").first.click()
    branch = page.locator('.step-card[data-path="steps[0].else[0]"]')
    branch.locator(".add-attribute").first.click()
    condition = branch.locator(".attribute-condition").first
    condition.locator(".attr-name").fill("plan")
    condition.locator("select.op").select_option("eq")
    condition.locator("input.value").fill("pro")
    branch_arms = branch.locator(".step-arm")
    branch_arms.nth(1).locator(".arm-add .add-step-exit").first.click()
    expect(page.locator('.step-card[data-path="steps[0].else[0].else[0]"]')).to_have_attribute(
        "data-kind", "exit"
    )

    page.click("#save-automation")  # the nested send has no body yet: shown on that card
    thanks = page.locator('.step-card[data-path="steps[0].then[0]"]')
    expect(thanks.locator(".step-error")).to_contain_text("body")
    expect(thanks.locator(".send-body")).to_have_class(re.compile(r"\bis-invalid\b"))
    thanks.locator(".send-body").fill("Thanks for verifying!")
    page.click("#save-automation")
    expect(page.locator("h2").first).to_contain_text("Onboarding")

    db.session.expire_all()
    automation = db.session.scalars(select(Automation)).one()
    assert automation.trigger_kind == "subscribes"
    assert automation.steps == [
        {
            "wait_for": {
                "event": "Completed KYC",
                "days": 2,
                "then": [{"send": {"channel": "in_app", "body": "Thanks for verifying!"}}],
                "else": [
                    {
                        "branch": {
                            "if": {"all": [{"attribute": "plan", "op": "eq", "value": "pro"}]},
                            "then": [],
                            "else": [{"exit": True}],
                        }
                    }
                ],
            }
        }
    ]

    # the editor shows the saved tree again
    page.goto(f"/engage/admin/automations/{automation.id}/edit")
    expect(page.locator(".step-card")).to_have_count(4)
    expect(page.locator("#trigger_kind")).to_have_value("subscribes")
    title = '.step-card[data-path="steps[0].else[0]"] > .card-header .step-title'
    expect(page.locator(title)).to_have_text("1.1. If / otherwise")
