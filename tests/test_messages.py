"""Broadcasts over email: one message per customer, skips, templates, scheduling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask_mail import email_dispatched

from flask_engage import signals
from flask_engage.errors import InvalidTemplate
from flask_engage.models import Broadcast, Message
from tests.hostapp import db, engage

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)


def outbox(app):
    return app.extensions["mail"].record_messages()


def messages(broadcast):
    rows = db.session.query(Message).filter_by(broadcast_id=broadcast.id).all()
    return {m.customer.external_id: m for m in rows}


def test_overlapping_segments_give_one_email_per_customer(app):
    engage.identify(1, email="ada@example.com", plan="pro", city="Lagos")
    engage.identify(2, email="bola@example.com", plan="pro", city="Accra")
    engage.identify(3, email="chi@example.com", plan="free", city="Lagos")
    engage.identify(4, plan="pro")  # no email
    db.session.commit()
    pro = engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
    lagos = engage.create_segment("Lagos", {"attribute": "city", "op": "eq", "value": "Lagos"})
    broadcast = engage.create_broadcast(
        "Launch", channel="email", segments=[pro, lagos], subject="Hi {{ customer.city }}",
        body="Hello {{ customer.plan }} customer")
    with outbox(app) as sent:
        engage.send_broadcast(broadcast)
    assert sorted(m.recipients for m in sent) == [
        ["ada@example.com"], ["bola@example.com"], ["chi@example.com"]]
    assert {m.recipients[0]: m.subject for m in sent}["bola@example.com"] == "Hi Accra"
    rows = messages(broadcast)
    assert {k: (m.status, m.error) for k, m in rows.items()} == {
        "1": ("sent", None), "2": ("sent", None), "3": ("sent", None),
        "4": ("skipped", "no_address")}
    assert all(m.sent_at is not None for k, m in rows.items() if k != "4")
    assert rows["4"].sent_at is None
    counts = engage.broadcast_counts(broadcast)
    assert counts["sent"] == 3 and counts["failed"] == 0 and counts["skipped"] == 1
    assert counts["no_address"] == 1 and counts["unsubscribed"] == 0
    assert db.session.get(Broadcast, broadcast.id).status == "sent"


def test_unsubscribed_customers_are_skipped_unless_the_broadcast_says_so(app):
    engage.identify(1, email="ada@example.com")
    engage.identify(2, email="bola@example.com")
    db.session.commit()
    engage.unsubscribe(2)
    quiet = engage.create_broadcast("News", channel="email", segments=["all"], subject="News",
                                    body="Hello")
    with outbox(app) as sent:
        engage.send_broadcast(quiet)
    assert [m.recipients for m in sent] == [["ada@example.com"]]
    assert messages(quiet)["2"].status == "skipped" and messages(quiet)["2"].error == "unsubscribed"
    counts = engage.broadcast_counts(quiet)
    assert (counts["sent"], counts["skipped"], counts["unsubscribed"]) == (1, 1, 1)

    legal = engage.create_broadcast("Terms", channel="email", segments=["all"], subject="Terms",
                                    body="Our terms changed", send_to_unsubscribed=True)
    with outbox(app) as sent:
        engage.send_broadcast(legal)
    assert sorted(m.recipients[0] for m in sent) == ["ada@example.com", "bola@example.com"]


def test_customer_who_unsubscribes_while_a_broadcast_is_sending_gets_no_more(app):
    engage.identify(1, email="ada@example.com")
    engage.identify(2, email="bola@example.com")
    db.session.commit()
    app.config["ENGAGE_BATCH_SIZE"] = 1

    def unsubscribe_bola(app, message):
        if message.recipients == ["ada@example.com"]:
            engage.unsubscribe(2)

    broadcast = engage.create_broadcast("News", channel="email", segments=["all"], subject="S",
                                        body="B")
    with outbox(app) as sent, email_dispatched.connected_to(unsubscribe_bola):
        engage.send_broadcast(broadcast)
    assert [m.recipients for m in sent] == [["ada@example.com"]]
    assert (messages(broadcast)["2"].status, messages(broadcast)["2"].error) == (
        "skipped", "unsubscribed")


def test_email_headers_link_and_sender(app):
    engage.identify(7, email="ada@example.com", name="Ada")
    db.session.commit()
    broadcast = engage.create_broadcast("Hello", channel="email", segments=["all"],
                                        subject="Hello {{ customer.name }}",
                                        body="Dear {{ customer.name }}, welcome.")
    with outbox(app) as sent:
        engage.send_broadcast(broadcast)
    (mail,) = sent
    assert mail.recipients == ["ada@example.com"]
    assert mail.sender == "news@example.com"
    link = mail.extra_headers["List-Unsubscribe"]
    assert link.startswith("<https://app.example.com/engage/unsubscribe/") and link.endswith(">")
    assert mail.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert link[1:-1] in mail.body
    raw = mail.as_string()
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in raw
    assert "To: ada@example.com" in raw


def test_sending_twice_sends_once(app):
    engage.identify(1, email="ada@example.com")
    db.session.commit()
    broadcast = engage.create_broadcast("Once", channel="email", segments=["all"], subject="S",
                                        body="B")
    with outbox(app) as sent:
        engage.send_broadcast(broadcast)
        engage.send_broadcast(broadcast)
        engage.send_broadcast(broadcast.id)
        engage.run_due()
    assert len(sent) == 1


def test_scheduled_broadcast_waits_for_its_time_and_can_be_cancelled(app):
    engage.identify(1, email="ada@example.com")
    db.session.commit()
    later = engage.create_broadcast("Later", channel="email", segments=["all"], subject="Later",
                                    body="B", scheduled_at=NOW + timedelta(hours=1))
    cancelled = engage.create_broadcast("Never", channel="email", segments=["all"], subject="Never",
                                        body="B", scheduled_at=NOW + timedelta(hours=1))
    with outbox(app) as sent:
        assert engage.send_broadcast(later, now=NOW).status == "scheduled"
        engage.send_broadcast(cancelled, now=NOW)
        engage.run_due(now=NOW + timedelta(minutes=30))
        assert sent == []
        engage.cancel_broadcast(cancelled)
        engage.run_due(now=NOW + timedelta(hours=2))
    assert [m.subject for m in sent] == ["Later"]
    assert db.session.get(Broadcast, later.id).status == "sent"
    assert db.session.get(Broadcast, cancelled.id).status == "cancelled"
    assert engage.broadcast_counts(cancelled)["total"] == 0


# Links as written: rewriting them through click URLs is test_engagement's subject.
@pytest.mark.parametrize("app_config", [{"ENGAGE_TRACK_CLICKS": False}])
def test_html_body_is_autoescaped_with_a_plain_text_part(app):
    engage.identify(1, email="ada@example.com", name='<script>alert("x")</script>')
    db.session.commit()
    broadcast = engage.create_broadcast(
        "Html", channel="email", segments=["all"], subject="Hi {{ customer.name }}",
        body='<p>Hello <b>{{ customer.name }}</b></p><p><a href="https://x.test/a">Read</a></p>')
    with outbox(app) as sent:
        engage.send_broadcast(broadcast)
    (mail,) = sent
    assert "<script>" not in mail.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in mail.html
    assert "<b>" in mail.html and 'href="https://x.test/a"' in mail.html
    assert "<p>" not in mail.body and "Read (https://x.test/a)" in mail.body
    assert "Unsubscribe" in mail.html and "/engage/unsubscribe/" in mail.body
    assert "\n" not in mail.subject


@pytest.mark.parametrize("source", [
    "{{ customer.__class__.__mro__ }}",
    "{{ ''.__class__.__subclasses__() }}",
    "{{ customer.items.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ cycler.__init__.__globals__.os.environ }}",
    "{% for x in range(10) %}{{ x.__class__.__base__.__subclasses__() }}{% endfor %}",
    "{{ customer.name",  # syntax error
])
def test_sandbox_escapes_are_rejected_at_creation(app, source):
    with pytest.raises(InvalidTemplate) as info:
        engage.create_broadcast("Evil", channel="email", segments=["all"], subject="S", body=source)
    assert info.value.field == "body"
    with pytest.raises(InvalidTemplate) as info:
        engage.create_broadcast("Evil", channel="email", segments=["all"], subject=source, body="B")
    assert info.value.field == "subject"
    assert db.session.query(Broadcast).count() == 0


def test_a_template_failing_for_one_customer_fails_only_that_message(app):
    engage.identify(1, email="ada@example.com", probe="upper")
    engage.identify(2, email="evil@example.com", probe="__class__")
    engage.identify(3, email="chi@example.com", probe="lower")
    db.session.commit()
    # the attribute name comes from the data: only rendering can tell it is unsafe
    body = "Hi {{ customer.email|attr(customer.probe) }}{{ config }}{{ request }}"
    broadcast = engage.create_broadcast("Mixed", channel="email", segments=["all"], subject="S",
                                        body=body)
    with outbox(app) as sent:
        engage.send_broadcast(broadcast)
    assert sorted(m.recipients[0] for m in sent) == ["ada@example.com", "chi@example.com"]
    rows = messages(broadcast)
    assert rows["2"].status == "failed" and "unsafe" in rows["2"].error
    assert engage.broadcast_counts(broadcast)["failed"] == 1
    for mail in sent:
        raw = mail.as_string()
        assert "test-secret" not in raw and "SECRET_KEY" not in raw
        assert "Config" not in raw


def test_secrets_are_out_of_reach_of_templates(app):
    engage.identify(1, email="ada@example.com")
    db.session.commit()
    with pytest.raises(InvalidTemplate, match="'config' is undefined"):
        engage.create_broadcast("Leak", channel="email", segments=["all"], subject="S",
                                body="{{ config.SECRET_KEY }}")
    body = "{{ config }}|{{ self }}|{{ namespace }}|{{ g }}|{{ session }}|{{ customer }}"
    broadcast = engage.create_broadcast("Leak", channel="email", segments=["all"], subject="S",
                                        body=body)
    with outbox(app) as sent:
        engage.send_broadcast(broadcast)
    for mail in sent:
        assert "test-secret" not in mail.as_string()


def test_email_dispatched_signal_fires_for_every_email(app):
    for i in range(5):
        engage.identify(i, email=f"c{i}@example.com")
    db.session.commit()
    seen, sent = [], []

    def record(app, message):
        seen.append(message.recipients)

    def on_sent(app, message, customer):
        sent.append((message.status, customer.email))

    broadcast = engage.create_broadcast("Sig", channel="email", segments=["all"], subject="S",
                                        body="B")
    with email_dispatched.connected_to(record), signals.message_sent.connected_to(on_sent):
        engage.send_broadcast(broadcast)
    assert sorted(seen) == [[f"c{i}@example.com"] for i in range(5)]
    assert sorted(sent) == [("sent", f"c{i}@example.com") for i in range(5)]
