"""A sent broadcast's page in the admin shows its outcomes (issue 19): delivered,
opened, clicked, unsubscribed since, failed, with rates, and a chart of opens and
clicks per day after sending."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

from flask_engage.models import utcnow
from tests.hostapp import db, engage
from tests.test_engagement import (
    BODY,
    BROWSER,
    click_url,
    customers,
    path,
    pixel_url,
    send_email,
)

ADMIN = "/engage/admin"


def outcome(page: str, name: str) -> tuple[str, str]:
    """(count, rate) of one row of the outcomes table."""
    row = page.split(f'data-outcome="{name}"')[1].split("</tr>")[0]
    count = re.search(r'data-count="\w+">([^<]*)<', row).group(1)
    rate = re.search(r'data-rate="\w+">([^<]*)', row)
    return count, unescape(rate.group(1)).strip() if rate else ""


def test_a_sent_broadcast_shows_opens_clicks_and_a_chart(app, client):
    customers("ann", "bob", "cat", "dan")
    broadcast, sent = send_email(app)
    client.get(path(pixel_url(sent["ann"])), headers=BROWSER)
    client.get(path(click_url(sent["ann"])), headers=BROWSER)
    unsubscribe = sent["dan"].extra_headers["List-Unsubscribe"].strip("<>")
    assert client.post(path(unsubscribe)).status_code == 200

    page = client.get(f"{ADMIN}/broadcasts/{broadcast.id}").get_data(as_text=True)
    assert outcome(page, "sent") == ("4", "")
    assert outcome(page, "opened") == ("1", "25.0%")
    assert outcome(page, "clicked") == ("1", "25.0%")
    assert outcome(page, "unsubscribed_after") == ("1", "25.0%")
    assert outcome(page, "failed") == ("0", "0.0% of all")
    assert "50.0% of those who opened" not in page  # one opened, and that one clicked
    assert "100.0% of those who opened" in page
    chart = page.split('id="engagement-chart"')[1].split("</svg>")[0]
    assert chart.count("<svg") == 1
    assert "<title>opened, day sent: 1</title>" in chart
    assert "<title>clicked, day sent: 1</title>" in chart
    assert "<title>opened, +1 d: 0</title>" in chart
    assert "by machines" not in chart
    # the progress line no longer reads opens and clicks as kinds of skips
    assert "skipped, opened" not in page and "skipped, clicked" not in page


def test_the_broadcasts_index_shows_sent_opened_and_clicked_rates(app, client):
    customers("ann", "bob", "cat", "dan")
    broadcast, sent = send_email(app)
    client.get(path(pixel_url(sent["ann"])), headers=BROWSER)
    client.get(path(pixel_url(sent["bob"])), headers=BROWSER)
    client.get(path(click_url(sent["ann"])), headers=BROWSER)
    draft = engage.create_broadcast(
        "Draft", channel="email", segments=["all"], subject="Hi", body="Hello"
    )
    db.session.commit()

    page = client.get(f"{ADMIN}/broadcasts/").get_data(as_text=True)
    table = page.split('id="broadcasts"')[1].split("</table>")[0]
    row = table.split(f'data-broadcast="{broadcast.id}"')[1].split("</tr>")[0]
    assert re.search(r'data-count="sent">4<', row)
    assert re.search(r'data-rate="opened">50.0%<', row)
    assert re.search(r'data-rate="clicked">25.0%<', row)
    unsent = table.split(f'data-broadcast="{draft.id}"')[1].split("</tr>")[0]
    assert (
        "%" not in unsent
        and unescape(re.search(r'data-count="sent">([^<]*)<', unsent).group(1)) == "–"
    )


def test_machine_opens_are_told_apart(app, client):
    customers("ann", "bob")
    broadcast, sent = send_email(app)
    client.get(path(pixel_url(sent["ann"])), headers={"User-Agent": "Mozilla/5.0"})
    page = client.get(f"{ADMIN}/broadcasts/{broadcast.id}").get_data(as_text=True)
    count, rate = outcome(page, "opened")
    assert (count, rate) == ("1", "50.0%")
    assert "(1 only by machines)" in page
    chart = page.split('id="engagement-chart"')[1].split("</svg>")[0]
    assert "<title>by machines, day sent: 1</title>" in chart
    assert "<title>opened, day sent: 0</title>" in chart


def test_a_draft_has_no_outcomes_yet(app, client):
    customers("ann")
    broadcast = engage.create_broadcast(
        "Draft", channel="email", segments=["all"], subject="Hi", body="Hello"
    )
    db.session.commit()
    page = client.get(f"{ADMIN}/broadcasts/{broadcast.id}").get_data(as_text=True)
    assert 'id="outcomes"' not in page and 'id="engagement-chart"' not in page


def test_an_automations_page_shows_outcomes_per_step_nested_steps_too(app, client):
    lagos = {"attribute": "city", "op": "eq", "value": "Lagos"}
    segment = engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
    automation = engage.create_automation(
        "Welcome",
        trigger={"joins": segment},
        steps=[
            {
                "branch": {
                    "if": lagos,
                    "then": [{"send": {"channel": "email", "subject": "Lagos", "body": BODY}}],
                    "else": [{"send": {"channel": "email", "subject": "Other", "body": BODY}}],
                }
            }
        ],
    )
    with app.extensions["mail"].record_messages() as outbox:
        engage.identify("ann", email="ann@example.com", plan="pro", city="Lagos")
        engage.identify("bob", email="bob@example.com", plan="pro", city="Abuja")
        engage.identify("cat", email="cat@example.com", plan="pro", city="Accra")
        db.session.commit()
        engage.run_due(utcnow() + timedelta(minutes=1))
    sent = {mail.recipients[0].split("@")[0]: mail for mail in outbox}
    assert sorted(sent) == ["ann", "bob", "cat"]
    client.get(path(pixel_url(sent["ann"])), headers=BROWSER)
    client.get(path(click_url(sent["bob"])), headers=BROWSER)

    page = client.get(f"{ADMIN}/automations/{automation.id}").get_data(as_text=True)
    steps = page.split('id="steps"')[1].split("</table>")[0]
    rows = re.findall(r'<tr data-step="(\d+)">(.*?)</tr>', steps, re.S)
    assert [position for position, _ in rows] == ["0", "1", "3"]  # the goto is not a step
    by_step = dict(rows)
    assert "then" in by_step["1"] and "otherwise" in by_step["3"]

    def shown(row: str, name: str) -> str:
        found = re.search(
            rf'data-outcome="{name}">{name}: <strong>(\d+)</strong> \(([\d.]+)%\)', row
        )
        return f"{found.group(1)} ({found.group(2)}%)"

    assert shown(by_step["1"], "opened") == "1 (100.0%)"  # ann, in Lagos
    assert shown(by_step["1"], "clicked") == "0 (0.0%)"
    assert shown(by_step["3"], "opened") == "0 (0.0%)"
    assert shown(by_step["3"], "clicked") == "1 (50.0%)"  # bob, of bob and cat
    assert "delivered: <strong>2</strong>" in by_step["3"]
    chart = page.split('id="engagement-chart"')[1].split("</svg>")[0]
    assert "<title>opened, day sent: 1</title>" in chart
    assert "<title>clicked, day sent: 1</title>" in chart
