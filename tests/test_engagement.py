"""Engagement: tracked links and the open pixel in emails, opens and clicks as events,
in-app reads, push clicks, and the outcomes of a send.

Emails are observed through Flask-Mail's ``record_messages``; links are followed
with the test client, as a mail client would.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from html import unescape
from urllib.parse import urlsplit

import pytest
from flask import request
from sqlalchemy import select

from flask_engage.channels import get_channel
from flask_engage.channels.webpush import generate_vapid_keys
from flask_engage.errors import ValidationError
from flask_engage.messages.compose import compose
from flask_engage.models import Customer, Event, Message, PushSubscription
from tests.hostapp import db, engage

BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"}
BODY = (
    '<p>Hi {{ customer.name }}</p><p><a class="cta" href="https://shop.example/sale?a=1&amp;b=2">'
    'Sale</a> and <a href="https://shop.example/sale?a=1&amp;b=2">again</a>, '
    '<a href="mailto:help@example.com">mail us</a>, <a href="#top">top</a>.</p>'
    '<p><a href="{{ unsubscribe_url }}">Stop these</a></p>'
)
PRIVATE, PUBLIC = generate_vapid_keys()


@pytest.fixture
def app_config():
    return {
        "ENGAGE_IDENTITY": lambda: request.headers.get("X-User"),
        "ENGAGE_VAPID_PRIVATE_KEY": PRIVATE,
        "ENGAGE_VAPID_PUBLIC_KEY": PUBLIC,
        "ENGAGE_VAPID_SUBJECT": "mailto:ops@example.com",
    }


def customers(*names: str) -> None:
    for name in names:
        engage.identify(name, email=f"{name}@example.com", name=name.title())
    db.session.commit()


def send_email(app, body: str = BODY, name: str = "Sale"):
    """Send an email broadcast to everyone; returns (broadcast, {recipient: email})."""
    broadcast = engage.create_broadcast(
        name, channel="email", segments=["all"], subject="Sale", body=body
    )
    with app.extensions["mail"].record_messages() as sent:
        engage.send_broadcast(broadcast)
    return broadcast, {mail.recipients[0].split("@")[0]: mail for mail in sent}


def hrefs(html: str) -> list[str]:
    return [unescape(href) for href in re.findall(r'href="([^"]*)"', html)]


def path(url: str) -> str:
    """The path and query of an absolute link (the test client serves any host)."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def click_url(mail) -> str:
    (url,) = {href for href in hrefs(mail.html) if "/engage/click/" in href}
    return url


def pixel_url(mail) -> str:
    (url,) = re.findall(r'<img src="([^"]*/engage/open/[^"]*)"', mail.html)
    return unescape(url)


def events(name: str) -> list[Event]:
    db.session.expire_all()
    return list(db.session.scalars(select(Event).where(Event.name == name).order_by(Event.id)))


def test_a_sent_emails_links_are_rewritten_and_its_unsubscribe_link_is_not(app):
    customers("ann")
    _, sent = send_email(app)
    mail = sent["ann"]
    links = hrefs(mail.html)
    assert "https://shop.example/sale?a=1&b=2" not in links
    tracked = [link for link in links if link.startswith("https://app.example.com/engage/click/")]
    assert len(tracked) == 2 and tracked[0] == tracked[1]  # one link, one token
    assert "mailto:help@example.com" in links and "#top" in links
    unsubscribe = mail.extra_headers["List-Unsubscribe"].strip("<>")
    assert unsubscribe in links  # as it was written, not through a click URL
    assert "/engage/open/" in pixel_url(mail)
    assert "https://shop.example/sale" not in mail.body  # the text part too
    assert "/engage/click/" in mail.body and unsubscribe in mail.body


def test_a_click_redirects_and_records_one_email_clicked(app, client):
    customers("ann", "bob")
    broadcast, sent = send_email(app)
    response = client.get(path(click_url(sent["ann"])), headers=BROWSER)
    assert response.status_code == 302
    assert response.headers["Location"] == "https://shop.example/sale?a=1&b=2"
    (clicked,) = events("Email clicked")
    message = db.session.scalar(select(Message).join(Customer).where(Customer.external_id == "ann"))
    assert clicked.customer_id == message.customer_id
    assert clicked.properties["message_id"] == message.id
    assert clicked.properties["broadcast_id"] == broadcast.id
    assert clicked.properties["url"] == "https://shop.example/sale?a=1&b=2"
    assert clicked.properties["machine"] is False
    assert clicked.properties["user_agent"] == BROWSER["User-Agent"]
    assert "automation_id" not in clicked.properties
    counts = engage.broadcast_counts(broadcast)
    assert (counts["clicked"], counts["opened"]) == (1, 0)


def test_a_tampered_or_unknown_link_gets_400_and_no_location(app, client):
    customers("ann")
    _, sent = send_email(app)
    good = path(click_url(sent["ann"]))
    token = good.rsplit("/", 1)[1]
    pixel_token = path(pixel_url(sent["ann"])).rsplit("/", 1)[1]
    flipped = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    for bad in (
        f"/engage/click/{flipped}",
        f"/engage/click/{token}x",
        f"/engage/click/{pixel_token}",  # an open token is no click token
        "/engage/click/x",
        "/engage/click/" + "A" * 5000,
        f"/engage/open/{token}",
        "/engage/open/%00",
        f"/engage/push/clicked/{token}",
    ):
        method = "post" if "/push/" in bad else "get"
        response = getattr(client, method)(bad, headers=BROWSER)
        assert response.status_code == 400, bad
        assert "Location" not in response.headers
        assert response.get_json()["field"] == "token"
    assert events("Email clicked") == [] and events("Email opened") == []
    assert client.get(good).status_code == 302


def test_the_pixel_records_an_open(app, client):
    customers("ann")
    broadcast, sent = send_email(app)
    response = client.get(path(pixel_url(sent["ann"])), headers=BROWSER)
    assert response.status_code == 200 and response.mimetype == "image/gif"
    assert "no-store" in response.headers["Cache-Control"]
    (opened,) = events("Email opened")
    assert opened.properties["broadcast_id"] == broadcast.id
    assert opened.properties["machine"] is False
    assert engage.broadcast_counts(broadcast)["opened"] == 1


def test_broadcast_counts_report_unique_opens_and_clicks(app, client):
    customers("ann", "bob", "cat")
    broadcast, sent = send_email(app)
    for _ in range(2):
        client.get(path(pixel_url(sent["ann"])), headers=BROWSER)
        client.get(path(click_url(sent["ann"])), headers=BROWSER)
    client.get(path(pixel_url(sent["bob"])), headers=BROWSER)
    counts = engage.broadcast_counts(broadcast)
    assert (counts["sent"], counts["opened"], counts["clicked"]) == (3, 2, 1)
    assert len(events("Email opened")) == 3 and len(events("Email clicked")) == 2


def test_a_segment_of_who_clicked_a_broadcast_counts_the_clicker(app, client):
    customers("ann", "bob")
    broadcast, sent = send_email(app)
    clicked = engage.create_segment(
        "Clicked the sale",
        {
            "event": "Email clicked",
            "where": [{"property": "broadcast_id", "op": "eq", "value": broadcast.id}],
        },
    )
    assert engage.members(clicked).count() == 0
    # inline mode: what a hit sets off (evaluating bob's segments) runs once the
    # response has been sent, that is closed
    client.get(path(click_url(sent["bob"])), headers=BROWSER).close()
    assert [c.external_id for c in engage.members(clicked)] == ["bob"]


@pytest.mark.parametrize(
    "agent, method",
    [
        ("Mozilla/5.0", "GET"),  # Apple Mail Privacy Protection's proxy
        ("", "GET"),
        (BROWSER["User-Agent"], "HEAD"),  # scanners probe links
        ("Mozilla/5.0 (compatible; Barracuda Sentinel)", "GET"),
        ("python-requests/2.32", "GET"),
    ],
)
def test_machine_opens_and_clicks_are_marked_and_counted_apart(app, client, agent, method):
    customers("ann")
    broadcast, sent = send_email(app)
    headers = {"User-Agent": agent}
    response = client.open(path(pixel_url(sent["ann"])), method=method, headers=headers)
    assert response.status_code == 200
    response = client.open(path(click_url(sent["ann"])), method=method, headers=headers)
    assert response.status_code == 302
    assert [e.properties["machine"] for e in events("Email opened")] == [True]
    assert [e.properties["machine"] for e in events("Email clicked")] == [True]
    outcomes = engage.broadcast_outcomes(broadcast)
    assert (outcomes["opened"], outcomes["machine_opened"]) == (1, 1)
    assert (outcomes["clicked"], outcomes["machine_clicked"]) == (1, 1)
    client.get(path(click_url(sent["ann"])), headers=BROWSER)  # then the person
    outcomes = engage.broadcast_outcomes(broadcast)
    assert (outcomes["clicked"], outcomes["machine_clicked"]) == (1, 0)


@pytest.mark.parametrize(
    "app_config", [{"ENGAGE_TRACK_OPENS": False, "ENGAGE_TRACK_CLICKS": False}]
)
def test_tracking_can_be_switched_off(app):
    customers("ann")
    _, sent = send_email(app)
    assert "https://shop.example/sale?a=1&b=2" in hrefs(sent["ann"].html)
    assert "/engage/click/" not in sent["ann"].html and "/engage/open/" not in sent["ann"].html


@pytest.mark.parametrize("app_config", [{"ENGAGE_TRACK_OPENS": False}])
def test_clicks_are_tracked_without_the_pixel(app):
    customers("ann")
    _, sent = send_email(app)
    assert click_url(sent["ann"]) and "/engage/open/" not in sent["ann"].html


def test_a_plain_text_email_gets_its_links_tracked_but_no_pixel(app, client):
    customers("ann")
    body = "Our sale: https://shop.example/sale?a=1. Stop: {{ unsubscribe_url }}"
    _, sent = send_email(app, body=body)
    mail = sent["ann"]
    assert mail.html is None and "https://shop.example" not in mail.body
    (url,) = re.findall(r"https://app\.example\.com/engage/click/\S+?(?=\. )", mail.body)
    assert "/engage/unsubscribe/" in mail.body
    assert client.get(path(url)).headers["Location"] == "https://shop.example/sale?a=1"


def test_previews_and_test_sends_are_not_tracked(app):
    """A message composed without a message being delivered (the admin's preview, a
    test send) keeps its links and has no pixel: nothing it shows can be counted."""
    customers("ann")
    ann = db.session.scalar(select(Customer).where(Customer.external_id == "ann"))
    composed = compose(ann, get_channel("email"), "Sale", BODY)
    assert "https://shop.example/sale?a=1&b=2" in hrefs(composed.rendered.html)
    assert "/engage/click/" not in composed.rendered.html
    assert "/engage/open/" not in composed.rendered.html


def test_an_admin_test_send_is_not_tracked(app, client):
    customers("ann")
    broadcast = engage.create_broadcast(
        "Sale", channel="email", segments=["all"], subject="Sale", body=BODY
    )
    with client.session_transaction() as session:
        session["_engage_admin_csrf"] = "token"
    with app.extensions["mail"].record_messages() as sent:
        response = client.post(
            f"/engage/admin/broadcasts/{broadcast.id}/test",
            data={"csrf_token": "token", "email": "me@example.com"},
        )
    assert response.status_code == 302
    (mail,) = sent
    assert mail.subject.startswith("[Test]")
    assert "https://shop.example/sale?a=1&b=2" in hrefs(mail.html)
    assert "/engage/click/" not in mail.html and "/engage/open/" not in mail.html


def test_a_click_of_a_forgotten_customer_still_redirects_and_records_nothing(app, client):
    customers("ann")
    _, sent = send_email(app)
    engage.forget("ann")
    db.session.commit()
    response = client.get(path(click_url(sent["ann"])), headers=BROWSER)
    assert response.status_code == 302
    assert response.headers["Location"] == "https://shop.example/sale?a=1&b=2"
    assert events("Email clicked") == []


def test_an_automation_email_click_names_the_automation_and_its_step(app, client):
    segment = engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
    automation = engage.create_automation(
        "Welcome",
        trigger={"joins": segment},
        steps=[
            {"wait": {"hours": 1}},
            {"send": {"channel": "email", "subject": "Welcome", "body": BODY}},
        ],
    )
    engage.identify("ann", email="ann@example.com", plan="pro")
    db.session.commit()
    with app.extensions["mail"].record_messages() as sent:
        engage.run_due(db.session.scalar(select(Customer.created_at)) + timedelta(hours=2))
    (mail,) = sent
    client.get(path(click_url(mail)), headers=BROWSER)
    (clicked,) = events("Email clicked")
    assert clicked.properties["automation_id"] == automation.id
    assert clicked.properties["step"] == 1
    assert "broadcast_id" not in clicked.properties
    step = engage.automation_stats(automation)["outcomes_by_step"][1]
    assert (step["sent"], step["clicked"], step["opened"]) == (1, 1, 0)
    assert step["rates"]["clicked"] == 100.0


def test_outcomes_with_rates_unsubscribes_and_a_chart(app, client):
    customers("ann", "bob", "cat", "dan")
    broadcast, sent = send_email(app)
    client.get(path(pixel_url(sent["ann"])), headers=BROWSER)
    client.get(path(click_url(sent["ann"])), headers=BROWSER)
    client.get(path(pixel_url(sent["bob"])), headers={"User-Agent": "Mozilla/5.0"})
    unsubscribe = sent["cat"].extra_headers["List-Unsubscribe"].strip("<>")
    assert client.post(path(unsubscribe)).status_code == 200
    outcomes = engage.broadcast_outcomes(broadcast)
    assert {k: outcomes[k] for k in ("sent", "opened", "clicked", "machine_opened")} == {
        "sent": 4,
        "opened": 2,
        "clicked": 1,
        "machine_opened": 1,
    }
    assert outcomes["unsubscribed_after"] == 1
    assert outcomes["rates"]["opened"] == 50.0
    assert outcomes["rates"]["clicked"] == 25.0
    assert outcomes["rates"]["click_to_open"] == 50.0
    assert outcomes["rates"]["unsubscribed_after"] == 25.0
    chart = engage.engagement_by_day(broadcast=broadcast, days=3)
    assert [point["day"] for point in chart] == [0, 1, 2]
    assert chart[0] == {
        "day": 0,
        "opened": 1,
        "machine_opened": 1,
        "clicked": 1,
        "machine_clicked": 0,
    }
    assert chart[1]["opened"] == chart[2]["opened"] == 0


def test_a_late_open_lands_on_its_day_in_the_chart(app, client):
    customers("ann")
    broadcast, _ = send_email(app)
    message = db.session.scalar(select(Message))
    message.opened_at = message.sent_at + timedelta(days=2, hours=1)
    db.session.commit()
    chart = engage.engagement_by_day(broadcast=broadcast, days=7)
    assert [point["opened"] for point in chart] == [0, 0, 1, 0, 0, 0, 0]


def test_engagement_by_day_needs_one_subject_and_sane_days(app):
    with pytest.raises(ValidationError, match="^broadcast:"):
        engage.engagement_by_day()
    with pytest.raises(ValidationError, match="^days:"):
        engage.engagement_by_day(broadcast=1, days=0)


def test_reading_an_in_app_message_is_recorded_once(app, client):
    engage.identify("ann", name="Ann")
    db.session.commit()
    broadcast = engage.create_broadcast(
        "News", channel="in_app", segments=["all"], subject="News", body="Hello"
    )
    engage.send_broadcast(broadcast)
    (message,) = client.get("/engage/inbox", headers={"X-User": "ann"}).get_json()["messages"]
    for _ in range(2):
        response = client.post(f"/engage/inbox/{message['id']}/read", headers={"X-User": "ann"})
        assert response.status_code == 200
    (read,) = events("In-app read")
    assert read.properties == {"message_id": message["id"], "broadcast_id": broadcast.id}
    assert engage.broadcast_counts(broadcast)["opened"] == 1
    assert client.post("/engage/inbox/999999/read", headers={"X-User": "ann"}).status_code == 404


def test_a_push_notification_reports_its_click(app, client, monkeypatch):
    payloads = []
    monkeypatch.setattr(
        "flask_engage.channels.webpush.webpush", lambda **kwargs: payloads.append(kwargs["data"])
    )
    engage.identify("ann")
    db.session.commit()
    ann = db.session.scalar(select(Customer.id))
    db.session.add(
        PushSubscription(
            customer_id=ann, endpoint="https://push.example.com/ann", p256dh="k", auth="a"
        )
    )
    db.session.commit()
    broadcast = engage.create_broadcast(
        "Flash sale", channel="push", segments=["all"], subject="Sale", body="Now on"
    )
    engage.send_broadcast(broadcast)
    (payload,) = [json.loads(data) for data in payloads]
    assert payload["report"].startswith("https://app.example.com/engage/push/clicked/")
    worker = client.get("/engage/sw.js")
    assert b"report" in worker.data
    worker.close()
    response = client.post(path(payload["report"]), headers=BROWSER)
    assert response.status_code == 200
    (clicked,) = events("Push clicked")
    assert clicked.properties["message_id"] == payload["message_id"]
    assert clicked.properties["broadcast_id"] == broadcast.id
    assert engage.broadcast_counts(broadcast)["clicked"] == 1
