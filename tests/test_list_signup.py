"""Subscribing from outside: the public form and its JSON twin, double opt-in by email,
and the per-list unsubscribe link."""

from __future__ import annotations

import re
from datetime import timedelta
from email import message_from_bytes
from email.policy import default

import pytest
from itsdangerous.timed import TimestampSigner
from sqlalchemy import func, select

from flask_engage.models import Customer, utcnow
from tests.conftest import free_port
from tests.hostapp import db, engage
from tests.test_failures import smtp_server

BASE = "https://app.example.com"
FORM = "/engage/lists/{}/subscribe"


def customers() -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(Customer)) or 0


def on_list(customer_list) -> list[str]:
    db.session.expire_all()
    return [customer.external_id for customer in engage.list_members(customer_list)]


def confirm_path(message) -> str:
    """The confirmation link of an email, as a path (checked in both parts)."""
    in_text = re.search(r"https://\S+/confirm/\S+", message.body).group(0)
    in_html = re.search(r'href="([^"]+/confirm/[^"]+)"', message.html).group(1)
    assert in_text == in_html and in_text.startswith(BASE + "/engage/lists/")
    return in_text[len(BASE) :]


def test_double_opt_in_sends_one_confirmation_and_subscribes_only_when_confirmed(app, client):
    waitlist = engage.create_list(
        "Waitlist", public=True, double_optin=True, redirect_url="https://example.com/thanks"
    )
    page = client.get(FORM.format("waitlist"))
    assert page.status_code == 200 and b'name="email"' in page.data
    with app.extensions["mail"].record_messages() as sent:
        first = client.post(
            FORM.format("waitlist"), data={"email": "Ada@Example.com", "first_name": "Ada"}
        )
        again = client.post(FORM.format("waitlist"), json={"email": "ada@example.com"})
    assert first.status_code == 200 and b"Check your inbox" in first.data
    assert again.status_code == 200 and again.json == {"ok": True, "status": "pending"}
    (message,) = sent  # one confirmation, however often the form is sent
    assert message.recipients == ["ada@example.com"]
    assert "Waitlist" in message.subject
    assert customers() == 0  # nobody is a customer before confirming
    assert engage.list_counts(waitlist)["pending"] == 1

    # An unconfirmed subscriber gets no broadcast.
    broadcast = engage.create_broadcast(
        "Launch", channel="email", segments=["all"], lists=[waitlist], subject="Hi", body="Hi"
    )
    with app.extensions["mail"].record_messages() as sent:
        engage.send_broadcast(broadcast)
    assert sent == []

    path = confirm_path(message)
    shown = client.get(path)  # a link scanner opening it confirms nothing
    assert shown.status_code == 200 and b"Confirm" in shown.data and on_list(waitlist) == []
    tampered = path[:-3] + ("xyz" if not path.endswith("xyz") else "abc")
    assert client.get(tampered).status_code == 400
    assert client.post(tampered).status_code == 400
    assert on_list(waitlist) == []

    done = client.post(path)
    assert done.status_code == 303 and done.headers["Location"] == "https://example.com/thanks"
    assert on_list(waitlist) == ["ada@example.com"]
    ada = engage.get_customer("ada@example.com")
    assert ada.email == "ada@example.com" and ada.attributes == {"first_name": "Ada"}
    assert client.post(path).status_code == 303  # confirming twice is harmless
    assert engage.list_counts(waitlist) == {"subscribed": 1, "pending": 0, "unsubscribed": 0}

    later = engage.create_broadcast(
        "News", channel="email", lists=[waitlist], subject="News", body="Hi"
    )
    with app.extensions["mail"].record_messages() as sent:
        engage.send_broadcast(later)
    assert [m.recipients for m in sent] == [["ada@example.com"]]


def test_a_known_customer_confirms_without_the_form_changing_them(app, client):
    engage.identify(7, email="bob@example.com", first_name="Robert")
    db.session.commit()
    engage.create_list("Beta", public=True, double_optin=True)
    with app.extensions["mail"].record_messages() as sent:
        response = client.post(
            FORM.format("beta"), data={"email": "bob@example.com", "first_name": "Mallory"}
        )
    assert response.status_code == 200
    assert client.post(confirm_path(sent[0])).status_code == 200
    assert on_list("beta") == ["7"]
    assert engage.get_customer(7).attributes == {"first_name": "Robert"}
    with app.extensions["mail"].record_messages() as sent:  # already in: nothing is sent,
        answer = client.post(FORM.format("beta"), json={"email": "bob@example.com"})
    assert answer.json["status"] == "pending" and sent == []  # and nothing is revealed


def test_an_expired_confirmation_link_is_refused(app, client, monkeypatch):
    engage.create_list("Beta", public=True, double_optin=True)
    long_ago = int((utcnow() - timedelta(days=8)).timestamp())
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: long_ago)
    with app.extensions["mail"].record_messages() as sent:
        client.post(FORM.format("beta"), data={"email": "late@example.com"})
    monkeypatch.undo()
    answer = client.post(confirm_path(sent[0]))
    assert answer.status_code == 400 and b"expired" in answer.data
    assert on_list("beta") == [] and customers() == 0


def test_a_single_opt_in_form_subscribes_at_once(app, client):
    news = engage.create_list("News", public=True, redirect_url="https://example.com/welcome")
    welcome = engage.create_automation(
        "Welcome",
        trigger={"subscribes": news},
        steps=[{"send": {"channel": "email", "subject": "Welcome", "body": "Hello"}}],
    )
    with app.extensions["mail"].record_messages() as sent:
        response = client.post(FORM.format("news"), data={"email": "cy@example.com"})
        answer = client.post(
            FORM.format("news"), json={"email": "di@example.com", "last_name": "Prince"}
        )
    assert response.status_code == 303 and response.headers["Location"].endswith("/welcome")
    assert answer.status_code == 200 and answer.json == {"ok": True, "status": "subscribed"}
    assert on_list(news) == ["cy@example.com", "di@example.com"]
    assert engage.get_customer("di@example.com").attributes == {"last_name": "Prince"}
    assert sorted(m.recipients[0] for m in sent) == ["cy@example.com", "di@example.com"]
    assert engage.automation_stats(welcome)["runs"]["completed"] == 2


def test_bad_sign_ups_name_the_field_and_write_nothing(app, client):
    engage.create_list("News", public=True)
    engage.create_list("Staff")  # not public: it has no form
    bad = client.post(FORM.format("news"), json={"email": "nope"})
    assert bad.status_code == 400 and bad.json["error"].startswith("email:")
    assert (
        client.post(FORM.format("news"), json={"email": "a@b.io", "plan": "pro"})
        .json["error"]
        .startswith("plan: unknown field")
    )
    assert (
        client.post(FORM.format("news"), json={"email": "a@b.io", "first_name": 5}).json["field"]
        == "first_name"
    )
    form = client.post(FORM.format("news"), data={"email": "nope"})
    assert form.status_code == 400 and b"is not an email address" in form.data
    assert b'value="nope"' in form.data  # what was typed is shown again
    for path in (FORM.format("staff"), FORM.format("missing")):
        assert client.get(path).status_code == 404
        assert client.post(path, data={"email": "a@b.io"}).status_code == 404
        assert client.post(path, json={"email": "a@b.io"}).json["error"].startswith("list:")
    engage.archive_list("news")
    assert b"closed" in client.get(FORM.format("news")).data
    assert client.post(FORM.format("news"), json={"email": "a@b.io"}).status_code == 400
    assert customers() == 0


@pytest.mark.parametrize("app_config", [{"ENGAGE_BROWSER_RATE_LIMIT": "2/minute"}])
def test_sign_ups_are_rate_limited_per_address(app, client):
    engage.create_list("News", public=True)
    answers = [
        client.post(FORM.format("news"), json={"email": f"p{i}@example.com"}).status_code
        for i in range(3)
    ]
    assert answers == [200, 200, 429]
    other = client.post(
        FORM.format("news"),
        json={"email": "q@example.com"},
        environ_base={"REMOTE_ADDR": "10.1.2.3"},
    )
    assert other.status_code == 200
    assert len(on_list("news")) == 3


def test_the_list_unsubscribe_link_leaves_channels_alone(app, client):
    engage.identify(1, email="ann@example.com")
    db.session.commit()
    news, beta = engage.create_list("News"), engage.create_list("Beta")
    engage.add_to_list(news, 1)
    engage.add_to_list(beta, 1)
    db.session.commit()
    link = engage.list_unsubscribe_url(news, 1)
    assert link.startswith(BASE + "/engage/lists/news/unsubscribe/")
    path = link[len(BASE) :]
    page = client.get(path)
    assert page.status_code == 200 and b"Unsubscribe?" in page.data and on_list(news) == ["1"]
    assert client.post(path[:-2] + "xx").status_code == 400
    done = client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200 and b"You are unsubscribed" in done.data
    assert on_list(news) == [] and on_list(beta) == ["1"]
    assert engage.count({"channel": "email", "op": "subscribed"}) == 1
    assert client.post(path).status_code == 200  # twice is harmless


@pytest.mark.parametrize(
    "app_config",
    [{"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": free_port(), "MAIL_SUPPRESS_SEND": False}],
)
def test_a_confirmation_waits_for_the_mail_server(app, client):
    engage.create_list("Beta", public=True, double_optin=True)
    answer = client.post(
        FORM.format("beta"), json={"email": "eve@example.com"}, headers={"Host": "evil.example"}
    )
    assert answer.json["status"] == "pending"  # the sign-up is kept; the email waits
    assert engage.status()["outbox"] == 1
    inbox, controller = smtp_server(app.config["MAIL_PORT"])
    try:
        engage.run_due(utcnow() + timedelta(minutes=2))
    finally:
        controller.stop()
    assert inbox.count() == {"eve@example.com": 1}
    ((_, raw),) = inbox.received
    parts = message_from_bytes(raw, policy=default).walk()
    text = "".join(p.get_content() for p in parts if p.get_content_maintype() == "text")
    assert "https://app.example.com/engage/lists/beta/confirm/" in text  # never the Host
    assert engage.status()["outbox"] == 0


def test_a_list_unsubscribe_link_still_works_after_a_merge(app, client):
    engage.identify("anon-1", email="x@example.com")
    db.session.commit()
    news = engage.create_list("News")
    engage.add_to_list(news, "anon-1")
    db.session.commit()
    path = engage.list_unsubscribe_url(news, "anon-1")[len(BASE) :]
    engage.merge("anon-1", "42")
    assert on_list(news) == ["42"]
    assert client.post(path).status_code == 200
    assert on_list(news) == []


def test_a_broadcast_to_one_list_unsubscribes_from_that_list(app, client):
    """Its List-Unsubscribe header and footer link take the customer off the list (one
    click, RFC 8058) and leave their email subscription alone; the template can still
    offer ``unsubscribe_all_url``. A broadcast that also goes to a segment keeps the
    channel's link."""
    engage.identify(1, email="ann@example.com", plan="pro")
    db.session.commit()
    news = engage.create_list("News")
    engage.add_to_list(news, 1)
    db.session.commit()
    letter = engage.create_broadcast(
        "Letter",
        channel="email",
        lists=[news],
        subject="News",
        body="Hi. Leave everything: {{ unsubscribe_all_url }}",
    )
    with app.extensions["mail"].record_messages() as outbox:
        engage.send_broadcast(letter)
    ((sent,),) = [outbox]
    header = sent.extra_headers["List-Unsubscribe"].strip("<>")
    assert header.startswith(BASE + "/engage/lists/news/unsubscribe/")
    assert header in sent.body and BASE + "/engage/unsubscribe/" in sent.body
    assert sent.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    done = client.post(header[len(BASE) :], data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200
    assert on_list(news) == []
    assert engage.count({"channel": "email", "op": "subscribed"}) == 1

    engage.add_to_list(news, 1)  # back on the list
    db.session.commit()
    pro = engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
    both = engage.create_broadcast(
        "Both", channel="email", segments=[pro], lists=[news], subject="S", body="Hi"
    )
    with app.extensions["mail"].record_messages() as outbox:
        engage.send_broadcast(both)
    ((sent,),) = [outbox]
    assert sent.extra_headers["List-Unsubscribe"].startswith(f"<{BASE}/engage/unsubscribe/")


def test_a_list_unsubscribe_link_still_answers_after_the_list_is_deleted(app, client):
    """Mail already sent keeps a working way to say no: the list is gone, so the
    customer gets nothing more from it (200 for the page and the one-click POST)."""
    engage.identify(1, email="ann@example.com")
    db.session.commit()
    news = engage.create_list("News")
    engage.add_to_list(news, 1)
    db.session.commit()
    path = engage.list_unsubscribe_url(news, 1)[len(BASE) :]
    engage.delete_list(news)
    db.session.commit()
    page = client.get(path)
    assert page.status_code == 200 and b"no longer exists" in page.data
    done = client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200 and b"You are unsubscribed" in done.data
    assert engage.count({"channel": "email", "op": "subscribed"}) == 1  # email untouched
    assert client.post(path[:-2] + "xx").status_code == 400  # an altered link still is not
