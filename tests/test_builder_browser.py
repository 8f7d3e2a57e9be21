"""The segment builder in a real browser offers what the served filter schema describes:
node kinds, operators per attribute type, windows and channels come from
``GET /engage/api/filter-schema``, and conditions of every kind change the live count."""

from __future__ import annotations

import json

from tests.hostapp import db, engage
from tests.test_admin_browser import ARTIFACTS, BROWSER_TESTS, CHROMIUM, page, server  # noqa: F401 (fixtures)

pytestmark = BROWSER_TESTS


def options(select) -> list[str]:
    return select.locator("option").evaluate_all("nodes => nodes.map(n => n.value)")


def test_builder_reads_its_grammar_from_the_filter_schema(app, client, page):  # noqa: F811
    from playwright.sync_api import expect

    schema = client.get("/engage/api/filter-schema").get_json()
    hints = schema["x-engage"]
    for number in range(1, 4):
        engage.identify(number, email=f"user{number}@example.com", age=20 + number)
    db.session.commit()
    engage.unsubscribe(1)
    preview = page.locator("#engage-preview")
    page.goto("/engage/admin/segments/new")
    expect(preview).to_have_attribute("data-count", "3")

    root = page.locator('[data-path="filters"] > .row-line')
    buttons = root.locator("button[class*='add-']").evaluate_all(
        "nodes => nodes.map(n => n.textContent)"
    )
    assert sorted(buttons) == sorted(f"+ {k['label']}" for k in hints["kinds"] if "new" in k)

    root.locator(".add-channel").click()
    channel = page.locator(".channel-condition").last
    assert (
        options(channel.locator("select.channel"))
        == schema["$defs"]["channel"]["properties"]["channel"]["enum"]
    )
    channel.locator("select.op").select_option("unsubscribed")
    expect(preview).to_have_attribute("data-count", "1")
    channel.locator("select.op").select_option("subscribed")
    expect(preview).to_have_attribute("data-count", "2")

    root.locator(".add-attribute").click()
    age = page.locator(".attribute-condition").last
    age.locator(".attr-name").fill("age")
    assert options(age.locator("select.op")) == hints["operators_by_type"]["number"]
    age.locator("select.op").select_option("between")
    age.locator("input.value-low").fill("22")
    age.locator("input.value-high").fill("22")
    expect(preview).to_have_attribute("data-count", "1")

    root.locator(".add-segment").click()
    segment = page.locator(".segment-condition").last
    segment.locator("select.op").select_option("not_in")
    expect(preview).to_have_attribute("data-count", "0")
    segment.locator("select.op").select_option("in")
    expect(preview).to_have_attribute("data-count", "1")

    root.locator(".add-event").click()
    event = page.locator(".event-condition").last
    windows = options(event.locator("select.window-kind"))
    assert windows == ["", *(window["name"] for window in hints["windows"])]
    assert sorted(windows[1:]) == sorted(schema["$defs"]["window"]["properties"])
    event.locator(".event-name").fill("Logged in")
    event.locator("select.measure-op").select_option("eq")
    event.locator("input.measure-value").fill("0")
    event.locator("select.window-kind").select_option("calendar")
    calendar = schema["$defs"]["window"]["properties"]["calendar"]["enum"]
    assert options(event.locator("select.window-value")) == calendar

    shown = json.loads(page.locator("#filters-json").input_value())
    assert shown == {
        "all": [
            {"channel": "email", "op": "subscribed"},
            {"attribute": "age", "op": "between", "value": [22, 22]},
            {"segment": "all", "op": "in"},
            {
                "event": "Logged in",
                "count": {"op": "eq", "value": 0},
                "window": {"calendar": "today"},
            },
        ]
    }
    expect(preview).to_have_attribute("data-count", "1")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "segment_builder_kinds.png"), full_page=True)
