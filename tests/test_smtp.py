"""Real SMTP (aiosmtpd): a 2,000-recipient broadcast, connections kept across batches,
and a worker killed mid-send."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

import pytest
from sqlalchemy import insert

from flask_engage.models import Broadcast, Customer, Message, utcnow
from tests.hostapp import db, engage

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def app_config(smtp):
    return {"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": smtp[1], "MAIL_SUPPRESS_SEND": False}


def add_customers(n: int) -> None:
    """Bulk-load customers (as an import would) and bring segment All up to date."""
    now = utcnow()
    db.session.execute(
        insert(Customer.__table__),
        [
            {
                "external_id": str(i),
                "email": f"c{i}@example.com",
                "attributes": {"n": i},
                "created_at": now,
                "updated_at": now,
            }
            for i in range(n)
        ],
    )
    db.session.commit()
    engage.recompute("all")


def test_two_thousand_recipients_each_get_exactly_one_email(app, smtp):
    inbox, _ = smtp
    add_customers(2000)
    broadcast = engage.create_broadcast(
        "Big",
        channel="email",
        segments=["all"],
        subject="Hello {{ customer.n }}",
        body="<p>Hi customer {{ customer.n }}</p>",
    )
    started = time.perf_counter()
    engage.send_broadcast(broadcast)
    elapsed = time.perf_counter() - started
    counts = inbox.count()
    assert len(counts) == 2000 and set(counts.values()) == {1}
    assert db.session.get(Broadcast, broadcast.id).status == "sent"
    assert engage.broadcast_counts(broadcast)["sent"] == 2000
    # ENGAGE_SMTP_CONNECTIONS (4) connections, kept for the 4 batches of 500
    assert len(inbox.peers) == 4
    # what arrived is what the customer should get, and nothing else
    rcpts, raw = inbox.received[0]
    mail = message_from_bytes(raw, policy=default_policy)
    n = rcpts[0][1:].split("@")[0]
    assert mail["To"] == rcpts[0] and mail["From"] == "news@example.com"
    assert mail["Subject"] == f"Hello {n}"
    assert mail["List-Unsubscribe"].startswith("<https://app.example.com/engage/unsubscribe/")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail.get_body(("plain",)).get_content().startswith(f"Hi customer {n}")
    kind = app.config["SQLALCHEMY_DATABASE_URI"].split(":")[0]
    print(f"\n2,000 emails over SMTP in {elapsed:.1f}s ({kind})")


def test_one_smtp_connection_for_all_batches(app, smtp):
    inbox, _ = smtp
    app.config.update(ENGAGE_BATCH_SIZE=7, ENGAGE_SMTP_CONNECTIONS=1)
    add_customers(30)
    broadcast = engage.create_broadcast(
        "Batches", channel="email", segments=["all"], subject="S", body="B"
    )
    engage.send_broadcast(broadcast)
    assert sum(inbox.count().values()) == 30
    assert len(inbox.peers) == 1  # the 5 batches (7 + 7 + 7 + 7 + 2) share it


def test_smtp_refusal_fails_the_message_and_the_rest_are_sent(app, smtp):
    inbox, _ = smtp
    engage.identify(1, email="ok@example.com")
    engage.identify(2, email="bad@example.com")
    db.session.commit()
    inbox.refuse_data("bad@example.com", "550 mailbox unavailable")
    broadcast = engage.create_broadcast(
        "Mixed", channel="email", segments=["all"], subject="S", body="B"
    )
    engage.send_broadcast(broadcast)
    rows = {
        m.customer.external_id: m
        for m in db.session.query(Message).filter_by(broadcast_id=broadcast.id)
    }
    assert rows["1"].status == "sent"
    assert rows["2"].status == "failed" and "550" in rows["2"].error
    assert inbox.count() == Counter({"ok@example.com": 1})


def run_worker(url: str, port: int, connections: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = ROOT / "tests" / "smtp_worker.py"
    command = [sys.executable, str(script), url, str(port), str(connections)]
    return subprocess.Popen(command, cwd=ROOT, env=env)


@pytest.mark.fault
@pytest.mark.parametrize("connections", [1, 3])
def test_worker_killed_mid_send_resumes_with_one_duplicate_per_connection(app, smtp, connections):
    inbox, port = smtp
    inbox.delay = 0.004  # a slowish mail server, so the kill lands mid-send
    total = 300
    add_customers(total)
    # the web process queues the broadcast; the (unreachable) queue leaves it to the worker
    app.config["ENGAGE_REDIS_URL"] = "redis://127.0.0.1:9/0"
    broadcast = engage.create_broadcast(
        "Crash", channel="email", segments=["all"], subject="S", body="B {{ customer.n }}"
    )
    engage.send_broadcast(broadcast)
    from flask_engage.jobs import drain_outbox

    drain_outbox()
    assert engage.broadcast_counts(broadcast)["queued"] == total
    url = app.config["SQLALCHEMY_DATABASE_URI"]

    worker = run_worker(url, port, connections)
    deadline = time.monotonic() + 60  # a loaded machine starts Python slowly
    while sum(inbox.count().values()) < total // 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    before = sum(inbox.count().values())
    assert 0 < before < total

    worker = run_worker(url, port, connections)
    assert worker.wait(timeout=90) == 0
    counts = inbox.count()
    assert len(counts) == total  # everyone got it
    duplicates = sum(n - 1 for n in counts.values())
    # only the message in flight on each connection at the kill: the statuses are
    # written in groups, but a connection sends no more before its last one is written
    assert duplicates <= connections
    assert engage.broadcast_counts(broadcast)["sent"] == total
    db.session.expire_all()
    assert db.session.get(Broadcast, broadcast.id).status == "sent"
    print(f"\nkilled after {before} of {total} emails; duplicates after restart: {duplicates}")
