"""Lists in the admin in a real browser, on a desktop screen and at 390 px: create a
list with the form, add a customer from their page, see the count on the lists page
and the list's page, then take them off again after the confirmation.
Screenshots go to tests/artifacts/."""

from __future__ import annotations

import re

from tests.hostapp import db, engage
from tests.test_admin_browser import BROWSER_TESTS, CHROMIUM, server  # noqa: F401 (fixture)
from tests.test_admin_browser_safe import page, screen, shot  # noqa: F401 (fixtures)
from tests.test_engagement import BROWSER, path, pixel_url

pytestmark = BROWSER_TESTS


def test_create_a_list_add_a_customer_and_see_the_count(app, page, screen):  # noqa: F811
    from playwright.sync_api import expect

    engage.identify("c-1", email="ada@example.com", first_name="Ada", last_name="Obi")
    engage.identify("c-2", email="bola@example.com", name="Bola Ade")
    db.session.commit()

    page.goto("/engage/admin/")
    if screen == "phone":  # the menu is folded
        page.click(".navbar-toggler")
    page.get_by_role("link", name="Lists", exact=True).click()
    expect(page).to_have_url(re.compile(r"/engage/admin/lists/$"))
    page.click("#new-list")
    page.fill("#name", "Beta testers")
    page.fill("#redirect_url", "not a url")
    page.click("#save-list")
    expect(page.locator(".engage-flash")).to_contain_text("redirect")
    expect(page.locator("#redirect_url")).to_have_class(re.compile("is-invalid"))
    page.fill("#redirect_url", "")
    page.check("#double_optin")
    page.click("#save-list")
    expect(page.locator(".engage-flash")).to_have_text("List 'Beta testers' created.")
    expect(page.locator("#subscribed-count")).to_have_text("0")

    # from the customer's page
    ada = engage.get_customer("c-1")
    page.goto(f"/engage/admin/customers/{ada.id}")
    page.select_option("#add-list", label="Beta testers")
    page.click("#add-to-list-button")
    expect(page.locator(".engage-flash")).to_have_text("Ada Obi is now subscribed to Beta testers.")
    expect(page.locator("#lists")).to_contain_text("subscribed")
    shot(page, screen, "customer_lists")

    page.goto("/engage/admin/lists/")
    row = page.locator('#lists tr[data-list="beta-testers"]')
    expect(row.locator('[data-count="subscribed"]')).to_have_text("1")
    expect(row.locator('[data-count="joined"]')).to_have_text("+1")
    shot(page, screen, "lists")

    # and from the list's page: add a second one by name, remove the first after confirming
    row.get_by_role("link", name="Beta testers").click()
    page.fill("#add-customer", "Bola")
    page.click("#add-member-button")
    expect(page.locator("#subscribed-count")).to_have_text("2")
    expect(page.locator("#list-chart svg")).to_be_visible()
    shot(page, screen, "list")
    messages: list[str] = []

    def answer(dialog, accept: bool) -> None:
        messages.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    remove = page.locator('#members tr[data-member="c-1"] button')
    page.once("dialog", lambda dialog: answer(dialog, False))
    remove.click()
    expect(page.locator("#subscribed-count")).to_have_text("2")
    page.once("dialog", lambda dialog: answer(dialog, True))
    remove.click()
    expect(page.locator(".engage-flash")).to_have_text("Ada Obi was taken off Beta testers.")
    expect(page.locator("#subscribed-count")).to_have_text("1")
    assert messages == ["Take ada@example.com off Beta testers?"] * 2
    assert [c.external_id for c in engage.list_members("beta-testers")] == ["c-2"]


def test_send_to_a_segment_and_a_list(app, page, screen):  # noqa: F811
    """A list built in the admin with two people, and a segment one of them is in too:
    the confirmation names three recipients and each gets one email."""
    from playwright.sync_api import expect

    engage.identify("c-1", email="ada@example.com", plan="pro")
    engage.identify("c-2", email="bola@example.com", plan="free")
    engage.identify("c-3", email="chidi@example.com", plan="free")
    engage.identify("c-4", email="dayo@example.com", plan="pro")
    db.session.commit()
    engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})

    page.goto("/engage/admin/lists/new")
    page.fill("#name", "Beta testers")
    page.click("#save-list")
    for who in ("ada@example.com", "bola@example.com"):
        page.fill("#add-customer", who)
        page.click("#add-member-button")
    expect(page.locator("#subscribed-count")).to_have_text("2")

    page.click("#broadcast-to-list")
    expect(page.locator("#lists option:checked")).to_have_text("Beta testers (2 subscribed)")
    page.select_option("#segments", label="Pro (2 customers)")
    page.fill("#name", "Beta news")
    page.fill("#subject", "News")
    page.fill(
        "#body", '<p>Hello {{ customer.email }}, <a href="https://example.com/beta">see</a></p>'
    )
    page.click("#send-now")
    dialog = page.locator("#send-dialog")
    expect(dialog.locator("#send-title")).to_have_text("Send “Beta news” now to 3 customers?")
    expect(dialog).to_contain_text("3 customers are in its segments and lists.")
    shot(page, screen, "broadcast_confirm_lists")
    with app.extensions["mail"].record_messages() as outbox:
        page.click("#confirm-send")
        expect(page.locator("#broadcast-status")).to_have_text("sent")
    assert sorted(m.recipients[0] for m in outbox) == [
        "ada@example.com",
        "bola@example.com",
        "dayo@example.com",
    ]
    expect(page.locator("#broadcast-audience")).to_contain_text("Pro segment, Beta testers list")

    # Ada opens it and clicks: the page's outcomes and chart say so
    ada = next(m for m in outbox if m.recipients[0] == "ada@example.com")
    client = app.test_client()
    client.get(path(pixel_url(ada)), headers=BROWSER)
    page.reload()
    expect(page.locator('#outcomes [data-count="opened"]')).to_have_text("1")
    expect(page.locator('#outcomes [data-rate="opened"]')).to_contain_text("33.3%")
    expect(page.locator('#engagement-chart rect[data-series="opened"]')).to_have_count(7)
    shot(page, screen, "broadcast_outcomes")


def test_an_automation_starts_when_someone_subscribes_to_a_list(app, page, screen):  # noqa: F811
    from playwright.sync_api import expect

    engage.create_list("Beta testers")
    page.goto("/engage/admin/automations/new")
    expect(page.locator("#segment")).to_be_visible()
    expect(page.locator("#customer_list")).to_be_hidden()
    page.fill("#name", "Welcome to the beta")
    page.select_option("#trigger_kind", "subscribes")
    expect(page.locator("#segment")).to_be_hidden()
    expect(page.locator("#customer_list")).to_be_visible()
    expect(page.locator("#event")).to_be_hidden()
    page.select_option("#customer_list", label="Beta testers")
    shot(page, screen, "automation_list_trigger")
    page.click("#save-automation")
    expect(page.locator("#trigger")).to_contain_text(
        "Starts when a customer subscribes to the list Beta testers."
    )
    page.goto(page.url + "/edit")
    expect(page.locator("#trigger_kind")).to_have_value("subscribes")
    expect(page.locator("#customer_list")).to_be_visible()
    page.select_option("#trigger_kind", "event")
    expect(page.locator("#event")).to_be_visible()
    expect(page.locator("#customer_list")).to_be_hidden()
