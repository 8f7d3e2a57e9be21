"""Several SMTP connections per worker (``ENGAGE_SMTP_CONNECTIONS``) against a real
aiosmtpd server: who gets what, refusals, failures that pass, and what goes on the wire."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from email import message_from_bytes
from email.policy import default as default_policy

import pytest

from flask_engage import signals
from flask_engage.models import Broadcast, Message, utcnow
from tests.hostapp import db, engage
from tests.smtp_sink import CountingInbox, PipeliningInbox, free_port
from tests.test_smtp import add_customers


@pytest.fixture(params=["plain", "pipelining"])
def smtp(request):
    """A real SMTP server on 127.0.0.1 (inbox, port), with and without PIPELINING."""
    from aiosmtpd.controller import Controller

    inbox = PipeliningInbox() if request.param == "pipelining" else CountingInbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield inbox, controller.port
    controller.stop()


@pytest.fixture
def app_config(smtp):
    return {
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": smtp[1],
        "MAIL_SUPPRESS_SEND": False,
        "ENGAGE_SMTP_CONNECTIONS": 3,
    }


def statuses(broadcast) -> dict[str, Message]:
    db.session.expire_all()
    return {
        m.customer.external_id: m
        for m in db.session.query(Message).filter_by(broadcast_id=broadcast.id)
    }


def test_three_connections_each_customer_gets_exactly_one_email(app, smtp):
    inbox, _ = smtp
    inbox.delay = 0.002  # a server that takes a moment, so every connection gets work
    app.config["ENGAGE_BATCH_SIZE"] = 40
    add_customers(200)
    broadcast = engage.create_broadcast(
        "Pool", channel="email", segments=["all"], subject="Hi {{ customer.n }}", body="B"
    )
    sent = []

    def on_sent(sender, message, customer):
        sent.append((customer.email, message.status, message.subject))

    with signals.message_sent.connected_to(on_sent, app):
        engage.send_broadcast(broadcast)
    counts = inbox.count()
    assert counts == Counter({f"c{i}@example.com": 1 for i in range(200)})
    # the signal fires once per message sent, after its status is written
    assert sorted(sent) == sorted((f"c{i}@example.com", "sent", f"Hi {i}") for i in range(200))
    # three connections at once, kept for all five batches
    assert len(inbox.peers) == 3
    assert engage.broadcast_counts(broadcast)["sent"] == 200
    assert db.session.get(Broadcast, broadcast.id).status == "sent"
    # each message went to its own customer, with its own subject
    for rcpts, raw in inbox.received:
        (rcpt,) = rcpts
        mail = message_from_bytes(raw, policy=default_policy)
        assert mail["To"] == rcpt
        assert mail["Subject"] == f"Hi {rcpt[1:].split('@')[0]}"


def test_a_refused_recipient_fails_and_the_others_are_sent(app, smtp):
    inbox, _ = smtp
    add_customers(30)
    inbox.refuse_data("c7@example.com", "550 mailbox unavailable")
    broadcast = engage.create_broadcast(
        "Refused", channel="email", segments=["all"], subject="S", body="B"
    )
    engage.send_broadcast(broadcast)
    rows = statuses(broadcast)
    assert rows["7"].status == "failed" and "550" in rows["7"].error
    assert {k for k, m in rows.items() if m.status == "sent"} == {str(i) for i in range(30)} - {"7"}
    assert "c7@example.com" not in inbox.count() and sum(inbox.count().values()) == 29
    assert db.session.get(Broadcast, broadcast.id).status == "partial"


# 421: the server closes the connection too; the next message goes over a fresh one.
@pytest.mark.parametrize("reply", ["451 try again later", "421 closing, try again later"])
def test_a_temporary_refusal_is_retried_with_backoff(app, smtp, reply):
    inbox, _ = smtp
    add_customers(12)
    inbox.refuse_data("c3@example.com", reply, times=1)
    broadcast = engage.create_broadcast(
        "Busy", channel="email", segments=["all"], subject="S", body="B"
    )
    started = utcnow()
    engage.send_broadcast(broadcast)
    row = statuses(broadcast)["3"]
    assert (row.status, row.attempts) == ("queued", 1) and reply[:3] in row.error
    assert row.retry_at >= started + timedelta(minutes=1)
    assert sum(inbox.count().values()) == 11
    engage.run_due(now=utcnow() + timedelta(minutes=2))
    assert statuses(broadcast)["3"].status == "sent"
    assert inbox.count() == Counter({f"c{i}@example.com": 1 for i in range(12)})
    assert db.session.get(Broadcast, broadcast.id).status == "sent"


def test_an_unreachable_server_leaves_every_message_for_a_retry(app, smtp):
    app.extensions["mail"].port = free_port()  # nothing listens there
    add_customers(5)
    broadcast = engage.create_broadcast(
        "Down", channel="email", segments=["all"], subject="S", body="B"
    )
    engage.send_broadcast(broadcast)
    rows = statuses(broadcast)
    assert {(m.status, m.attempts) for m in rows.values()} == {("queued", 1)}
    assert all("unreachable" in m.error for m in rows.values())
    app.extensions["mail"].port = smtp[1]  # back up
    engage.run_due(now=utcnow() + timedelta(minutes=2))
    assert smtp[0].count() == Counter({f"c{i}@example.com": 1 for i in range(5)})


def test_what_goes_on_the_wire_reads_as_the_message_composed(app, smtp):
    inbox, _ = smtp
    app.config["ENGAGE_MAIL_SENDER"] = "Équipe Nouvelles <news@example.com>"
    engage.identify(1, email="ada@example.com", name="Adà")
    db.session.commit()
    broadcast = engage.create_broadcast(
        "Accents",
        channel="email",
        segments=["all"],
        subject="Bonjour {{ customer.name }} ✓ " + "long " * 200,
        body="<p>Chère {{ customer.name }},</p>\n<p>Voilà.</p>",
    )
    engage.send_broadcast(broadcast)
    ((rcpts, raw),) = inbox.received
    mail = message_from_bytes(raw, policy=default_policy)
    assert rcpts == ["ada@example.com"] and mail["To"] == "ada@example.com"
    assert str(mail["From"]) == "Équipe Nouvelles <news@example.com>"
    assert mail["Subject"] == ("Bonjour Adà ✓ " + "long " * 200).strip()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert "Chère Adà" in mail.get_body(("html",)).get_content()
    text = mail.get_body(("plain",)).get_content()
    assert text.startswith("Chère Adà") and "/engage/unsubscribe/" in text
    link = mail["List-Unsubscribe"]
    assert link.startswith("<https://app.example.com/engage/unsubscribe/") and link[1:-1] in text
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["Message-ID"] and mail["Date"]
    assert not mail.defects and not any(part.defects for part in mail.walk())


def test_a_slow_server_gets_three_messages_at_once(app, smtp):
    inbox, _ = smtp
    add_customers(40)
    original = inbox.handle_DATA
    now, most = [0], [0]

    async def slow(server, session, envelope):  # 50 ms a message
        now[0] += 1
        most[0] = max(most[0], now[0])
        await asyncio.sleep(0.05)
        now[0] -= 1
        return await original(server, session, envelope)

    inbox.handle_DATA = slow
    broadcast = engage.create_broadcast(
        "Slow", channel="email", segments=["all"], subject="S", body="B"
    )
    engage.send_broadcast(broadcast)
    assert sum(inbox.count().values()) == 40
    assert most[0] == 3  # one message at a time would take 40 x 50 ms


def test_email_dispatched_carries_the_message_that_went_on_the_wire(app, smtp):
    inbox, _ = smtp
    add_customers(3)
    broadcast = engage.create_broadcast(
        "Wire", channel="email", segments=["all"], subject="Hi {{ customer.n }}", body="<p>B</p>"
    )
    with app.extensions["mail"].record_messages() as outbox:
        engage.send_broadcast(broadcast)
    received = {
        rcpts[0]: message_from_bytes(raw, policy=default_policy) for rcpts, raw in inbox.received
    }
    assert len(outbox) == len(received) == 3
    for recorded in outbox:
        (address,) = recorded.recipients
        mail = received[address]
        assert mail["Message-ID"] == recorded.msgId
        assert mail["Subject"] == recorded.subject == f"Hi {address[1]}"
        assert mail["List-Unsubscribe"] == recorded.extra_headers["List-Unsubscribe"]
        for kind, sent in (("plain", recorded.body), ("html", recorded.html)):
            content = mail.get_body((kind,)).get_content()
            assert content.replace("\r\n", "\n").rstrip("\n") == sent  # CRLF on the wire
        # the recorded message writes the same email (but for its MIME boundary)
        again = message_from_bytes(recorded.as_bytes(), policy=default_policy)
        assert [(k, v) for k, v in again.items() if k != "Content-Type"] == [
            (k, v) for k, v in mail.items() if k != "Content-Type"
        ]


def test_mail_max_emails_still_opens_a_new_connection(app, smtp):
    inbox, _ = smtp
    app.extensions["mail"].max_emails = 2  # MAIL_MAX_EMAILS, as Flask-Mail read it
    app.config["ENGAGE_SMTP_CONNECTIONS"] = 1
    add_customers(5)
    broadcast = engage.create_broadcast(
        "Max", channel="email", segments=["all"], subject="S", body="B"
    )
    engage.send_broadcast(broadcast)
    assert sum(inbox.count().values()) == 5
    assert len(inbox.peers) == 3  # 2 + 2 + 1


def test_a_status_write_that_fails_stops_the_sends_and_nothing_is_lost(app, smtp, monkeypatch):
    inbox, _ = smtp
    add_customers(60)
    broadcast = engage.create_broadcast(
        "Down", channel="email", segments=["all"], subject="S", body="B"
    )
    from flask_engage.messages import delivery

    write, calls = delivery._write, [0]

    def failing(session, token, rows):
        calls[0] += 1
        if calls[0] == 5:
            raise RuntimeError("database gone")
        return write(session, token, rows)

    monkeypatch.setattr(delivery, "_write", failing)
    engage.send_broadcast(broadcast)  # inline: the failure is logged, the schedule retries
    sent_before = sum(inbox.count().values())
    counts = engage.broadcast_counts(broadcast)
    assert 0 < counts["sent"] <= sent_before < 60
    # no connection sent more once its status could not be written: a few unrecorded
    # sends at most (one per connection, and the group that failed)
    assert sent_before - counts["sent"] <= 3
    monkeypatch.setattr(delivery, "_write", write)
    app.config["ENGAGE_SEND_LEASE"] = 0  # the claim of the failed batch has run out
    engage.run_due(utcnow() + timedelta(seconds=1))
    counts = inbox.count()
    assert set(counts) == {f"c{i}@example.com" for i in range(60)}  # nobody missed
    assert sum(counts.values()) - 60 <= 3
    assert engage.broadcast_counts(broadcast)["sent"] == 60


def test_pipelining_is_used_when_the_server_offers_it_and_only_then(app, smtp):
    inbox, _ = smtp
    add_customers(20)
    broadcast = engage.create_broadcast(
        "Pipes", channel="email", segments=["all"], subject="S {{ customer.n }}", body="B"
    )
    engage.send_broadcast(broadcast)
    assert inbox.count() == Counter({f"c{i}@example.com": 1 for i in range(20)})
    assert inbox.pipelined == (20 if isinstance(inbox, PipeliningInbox) else 0)
    assert engage.broadcast_counts(broadcast)["sent"] == 20


def test_a_refused_recipient_is_not_sent_and_the_others_are(app, smtp):
    inbox, _ = smtp
    add_customers(10)
    inbox.refuse_recipient("c4@example.com", "550 5.1.1 <c4@example.com>: no such user")
    broadcast = engage.create_broadcast(
        "Refused", channel="email", segments=["all"], subject="S", body="B"
    )
    engage.send_broadcast(broadcast)
    rows = statuses(broadcast)
    # a permanent refusal fails the message at once (not retried as a lost
    # connection), with the server's words but not the address
    assert rows["4"].status == "failed" and rows["4"].attempts == 0
    assert rows["4"].error == "SMTP 550: recipient refused: 5.1.1 <address>: no such user"
    assert {k for k, m in rows.items() if m.status == "sent"} == {str(i) for i in range(10)} - {"4"}
    assert "c4@example.com" not in inbox.count() and sum(inbox.count().values()) == 9


def test_a_recipient_refused_for_now_is_retried(app, smtp):
    inbox, _ = smtp
    add_customers(5)
    inbox.refuse_recipient("c2@example.com", "450 4.2.0 greylisted, come back later", times=1)
    broadcast = engage.create_broadcast(
        "Grey", channel="email", segments=["all"], subject="S", body="B"
    )
    engage.send_broadcast(broadcast)
    row = statuses(broadcast)["2"]
    assert (row.status, row.attempts) == ("queued", 1) and "recipient refused for now" in row.error
    engage.run_due(now=utcnow() + timedelta(minutes=2))
    assert statuses(broadcast)["2"].status == "sent"
    assert sum(inbox.count().values()) == 5


def test_a_sender_refused_for_now_is_retried(app, smtp):
    inbox, _ = smtp
    add_customers(10)
    counting, seen = inbox.handle_MAIL, [0]

    async def busy_third(server, session, envelope, address, mail_options):
        seen[0] += 1
        if seen[0] == 3:
            return "451 busy, try again later"
        return await counting(server, session, envelope, address, mail_options)

    inbox.handle_MAIL = busy_third
    broadcast = engage.create_broadcast(
        "Busy", channel="email", segments=["all"], subject="S", body="B"
    )
    engage.send_broadcast(broadcast)
    rows = statuses(broadcast)
    (waiting,) = [m for m in rows.values() if m.status == "queued"]
    assert waiting.attempts == 1 and "451" in waiting.error
    assert sum(inbox.count().values()) == 9
    engage.run_due(now=utcnow() + timedelta(minutes=2))
    assert inbox.count() == Counter({f"c{i}@example.com": 1 for i in range(10)})
