"""``flask engage recompute | status | worker | vapid-keys`` through Flask's CLI runner."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from flask_engage.models import OutboxItem
from tests.hostapp import User, db, engage

PRO = {"attribute": "plan", "op": "eq", "value": "pro"}
RECENT = {"event": "Purchase", "window": {"last_days": 30}}


def invoke(app, *args: str):
    return app.test_cli_runner().invoke(args=["engage", *args])


def test_recompute_all_shows_progress_and_summary(app, session):
    pro = engage.create_segment("Pro", PRO)
    engage.create_segment("Recent buyers", RECENT)
    session.add_all([User(email=f"u{i}@example.com", plan="pro") for i in range(4)])
    session.commit()
    with db.engine.begin() as conn:  # memberships out of date, as after a bulk load
        conn.execute(text("DELETE FROM engage_memberships WHERE segment_id = :s"), {"s": pro.id})
    result = invoke(app, "recompute")
    assert result.exit_code == 0, result.output
    assert "Recomputing segments" in result.output
    assert "3 segment(s): 4 joined, 0 left, took" in result.output
    assert len(list(engage.members(pro))) == 4


def test_recompute_one_segment_by_slug(app, session):
    engage.create_segment("Pro", PRO)
    result = invoke(app, "recompute", "pro")
    assert result.exit_code == 0, result.output
    assert "1 segment(s): 0 joined, 0 left, took" in result.output


def test_recompute_unknown_segment_fails_clearly(app):
    result = invoke(app, "recompute", "no-such-segment")
    assert result.exit_code != 0
    assert "no segment 'no-such-segment'" in result.output


def test_status_in_inline_mode(app, session):
    app.config["ENGAGE_RECOMPUTE_INTERVAL"] = 0  # every time-based segment is stale at once
    engage.create_segment("Recent buyers", RECENT)
    before = invoke(app, "status")
    assert before.exit_code == 0, before.output
    lines = dict(line.strip().split(": ", 1) for line in before.output.splitlines())
    assert lines["mode"].startswith("inline")
    assert lines["outbox backlog"] == "0"
    assert lines["last tick"] == "never"
    assert lines["stale segments"] == "recent-buyers"
    engage.run_due()
    app.config["ENGAGE_RECOMPUTE_INTERVAL"] = 3600
    after = dict(line.strip().split(": ", 1) for line in invoke(app, "status").output.splitlines())
    assert after["last tick"] != "never"
    assert after["stale segments"] == "none"


def test_worker_burst_in_inline_mode_processes_the_backlog(app, session):
    pro = engage.create_segment("Pro", PRO)
    app.config["ENGAGE_REDIS_URL"] = f"redis://u{uuid.uuid4().hex[:8]}@127.0.0.1:1/0"
    session.add_all([User(email=f"u{i}@example.com", plan="pro") for i in range(3)])
    session.commit()
    app.config["ENGAGE_REDIS_URL"] = None
    assert "outbox backlog: 3" in invoke(app, "status").output
    result = invoke(app, "worker", "--burst")
    assert result.exit_code == 0, result.output
    assert "running what is due inline" in result.output
    assert len(list(engage.members(pro))) == 3
    assert db.session.query(OutboxItem).count() == 0


def test_vapid_keys_prints_a_usable_pair(app):
    result = invoke(app, "vapid-keys")
    assert result.exit_code == 0
    values = dict(line.split("=", 1) for line in result.output.splitlines())
    assert set(values) == {"ENGAGE_VAPID_PRIVATE_KEY", "ENGAGE_VAPID_PUBLIC_KEY",
                           "ENGAGE_VAPID_SUBJECT"}
    assert len(values["ENGAGE_VAPID_PUBLIC_KEY"]) > 80
