"""The segment builder in a real browser offers lists: a "List" condition picks a list by
name, the live count follows it, and the saved segment holds the list's subscribers."""

from __future__ import annotations

import json

from tests.hostapp import db, engage
from tests.test_admin_browser import BROWSER_TESTS, CHROMIUM, page, server  # noqa: F401 (fixtures)

pytestmark = BROWSER_TESTS


def test_builder_builds_a_segment_on_a_list(app, page):  # noqa: F811
    from playwright.sync_api import expect

    for number in range(1, 4):
        engage.identify(number, email=f"user{number}@example.com")
    db.session.commit()
    engage.create_list("Beta testers")
    engage.create_list("Newsletter")
    for number in (1, 3):
        engage.add_to_list("newsletter", number)
    db.session.commit()

    preview = page.locator("#engage-preview")
    page.goto("/engage/admin/segments/new")
    expect(preview).to_have_attribute("data-count", "3")
    page.locator('[data-path="filters"] > .row-line .add-list').click()
    condition = page.locator(".list-condition").last
    chooser = condition.locator("select.list")
    names = chooser.locator("option").evaluate_all("nodes => nodes.map(n => n.textContent)")
    assert names == ["Beta testers", "Newsletter"]
    chooser.select_option("newsletter")
    expect(preview).to_have_attribute("data-count", "2")
    condition.locator("select.op").select_option("not_in")
    expect(preview).to_have_attribute("data-count", "1")
    condition.locator("select.op").select_option("in")
    expect(preview).to_have_attribute("data-count", "2")
    assert json.loads(page.locator("#filters-json").input_value()) == {
        "all": [{"list": "newsletter", "op": "in"}]
    }

    page.fill("#name", "Readers")
    page.click("#save-segment")
    expect(page.locator("h2").first).to_contain_text("Readers")
    expect(page.locator("#members")).to_contain_text("user3@example.com")
    assert sorted(c.external_id for c in engage.members("readers")) == ["1", "3"]
