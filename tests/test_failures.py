"""Failures stay local: one bad record, segment, run or message never stops the others,
and the schedule keeps going (issue "Failures stay local")."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from flask_engage.db import operation_session
from flask_engage.errors import InvalidAutomation, ValidationError
from flask_engage.jobs import retry_parked
from flask_engage.models import (
    Automation,
    AutomationRun,
    Broadcast,
    Customer,
    Message,
    OutboxItem,
    Segment,
    utcnow,
)
from tests.hostapp import User, db, engage
from tests.smtp_sink import Inbox, free_port

PRO = {"attribute": "plan", "op": "eq", "value": "pro"}


def member_ids(segment: str) -> list[str]:
    return sorted(c.external_id for c in engage.members(segment))


def count(model, *where) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def corrupt_filters(segment_id: int, filters: dict) -> None:
    """Store filters that no longer compile (a hand edit, an older version's data)."""
    with operation_session() as session:
        session.execute(update(Segment).where(Segment.id == segment_id).values(filters=filters))


def test_a_segment_that_cannot_be_evaluated_stays_local(app, session):
    engage.create_segment("Pro", PRO)
    broken = engage.create_segment("Broken", {"attribute": "city", "op": "eq", "value": "Lagos"})
    corrupt_filters(broken.id, {"attribute": "city", "op": "no-such-operator", "value": 1})

    session.add_all([User(email=f"u{i}@example.com", plan="pro") for i in range(3)])
    session.commit()  # never fails, and every other segment is up to date

    assert member_ids("pro") == ["1", "2", "3"]
    assert member_ids("all") == ["1", "2", "3"]
    status = engage.status()
    assert "broken" in status["failing_segments"]
    assert "no-such-operator" in status["failing_segments"]["broken"]

    # fixing the segment brings it back, with its members
    engage.update_segment("broken", filters=PRO)
    assert member_ids("broken") == ["1", "2", "3"]
    assert engage.status()["failing_segments"] == {}


def test_a_poisoned_outbox_item_is_retried_then_parked_and_others_proceed(app, session):
    engage.create_segment("Pro", PRO)
    with operation_session() as own:
        own.add(OutboxItem(task="evaluate", key="not-a-customer-id"))
    now = utcnow()
    for attempt in range(5):  # 30 s, 2 min, 8 min, 32 min of backoff
        session.add(User(email=f"u{attempt}@example.com", plan="pro"))
        session.commit()
        engage.run_due(now + timedelta(hours=attempt))
        assert len(member_ids("pro")) == attempt + 1  # everyone else goes on

    item = db.session.scalars(select(OutboxItem)).one()
    assert item.parked_at is not None and item.attempts == 5
    assert "ValueError" in item.error
    assert engage.status()["parked"] == 1 and engage.status()["outbox"] == 0

    assert retry_parked() == 1
    db.session.expire_all()
    assert engage.status()["parked"] == 0  # back in line (and parked again when it fails)


def test_a_failing_run_is_retried_then_parked_while_other_runs_complete(app, session):
    pro = engage.create_segment("Pro", PRO)
    good = engage.create_automation(
        "Welcome", trigger={"joins": pro}, steps=[{"send": {"channel": "in_app", "body": "Hi"}}]
    )
    bad = engage.create_automation(
        "Later", trigger={"joins": pro}, steps=[{"wait": {"until": "09:00"}}]
    )
    with operation_session() as own:  # steps stored by an older version, no longer valid
        own.execute(
            update(Automation)
            .where(Automation.id == bad.id)
            .values(steps=[{"wait": {"until": "9h"}}])
        )
    session.add_all([User(email=f"u{i}@example.com", plan="pro") for i in range(2)])
    session.commit()

    sent = count(Message, Message.automation_id == good.id, Message.status == "sent")
    assert sent == 2
    now = utcnow()
    for hours in range(1, 8):
        engage.run_due(now + timedelta(hours=hours * 6))
    runs = db.session.scalars(select(AutomationRun).where(AutomationRun.automation_id == bad.id))
    assert {(run.status, run.attempts) for run in runs} == {("parked", 5)}
    assert engage.status()["parked"] == 2
    errors = db.session.scalars(select(AutomationRun.error).where(AutomationRun.status == "parked"))
    assert all("ValueError" in error for error in errors)


@pytest.mark.parametrize("zone", ["America", "x" * 300, "Mars/Olympus", 42])
def test_a_bad_customer_timezone_falls_back_to_the_configured_one(app, session, zone, caplog):
    pro = engage.create_segment("Pro", PRO)
    automation = engage.create_automation(
        "Morning",
        trigger={"joins": pro},
        steps=[{"wait": {"until": "09:00"}}, {"send": {"channel": "in_app", "body": "Hi"}}],
    )
    engage.identify("u1", plan="pro", timezone=zone)
    engage.identify("u2", plan="pro")
    db.session.commit()
    with caplog.at_level(logging.WARNING, logger="flask_engage"):
        engage.run_due(utcnow() + timedelta(days=1, hours=1))
    sent = db.session.scalars(
        select(Customer.external_id)
        .join(Message, Message.customer_id == Customer.id)
        .where(Message.automation_id == automation.id, Message.status == "sent")
    ).all()
    assert sorted(sent) == ["u1", "u2"]
    if zone != 42:
        assert "unknown timezone" in caplog.text


@pytest.mark.parametrize(
    ("wait", "path"),
    [
        ({"days": 1e12}, "steps[0].wait.days"),
        ({"hours": 1e9}, "steps[0].wait.hours"),
        ({"minutes": float("inf")}, "steps[0].wait.minutes"),
        ({"days": 36500, "hours": 48}, "steps[0].wait"),
    ],
)
def test_waits_beyond_100_years_are_refused_at_save(app, wait, path):
    pro = engage.create_segment("Pro", PRO)
    with pytest.raises(InvalidAutomation) as info:
        engage.create_automation("Forever", trigger={"joins": pro}, steps=[{"wait": wait}])
    assert info.value.field == path
    assert count(Automation) == 0


def test_a_template_failing_for_some_recipients_ends_partial_and_for_all_failed(app, session):
    engage.identify("a", email="a@example.com", amount=12.5)
    engage.identify("b", email="b@example.com")
    db.session.commit()
    body = "You spent {{ customer.amount | round }}"
    outcomes = {}
    with app.extensions["mail"].record_messages() as outbox:
        for name, segment in (("Mixed", "all"),):
            broadcast = engage.create_broadcast(
                name, channel="email", segments=[segment], subject="Hi", body=body
            )
            outcomes[name] = engage.send_broadcast(broadcast).status
        nobody = engage.create_segment("No amount", {"attribute": "amount", "op": "not_exists"})
        broadcast = engage.create_broadcast(
            "Nobody", channel="email", segments=[nobody], subject="Hi", body=body
        )
        outcomes["Nobody"] = engage.send_broadcast(broadcast).status
    assert outcomes == {"Mixed": "partial", "Nobody": "failed"}
    assert [m.recipients for m in outbox] == [["a@example.com"]]
    failed = db.session.scalars(select(Message).where(Message.status == "failed")).all()
    assert all("body: TypeError" in m.error for m in failed)


MAIL_PORT = free_port()  # nothing listens here until a test starts a server on it
DOWN = {"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": MAIL_PORT, "MAIL_SUPPRESS_SEND": False}


def smtp_server(port: int):
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    return inbox, controller


@pytest.mark.parametrize("app_config", [DOWN])
def test_smtp_down_keeps_messages_queued_and_retries_them(app):
    engage.identify("a", email="a@example.com")
    engage.identify("b", email="b@example.com")
    db.session.commit()
    broadcast = engage.create_broadcast(
        "Hello", channel="email", segments=["all"], subject="Hi", body="Hello"
    )
    assert engage.send_broadcast(broadcast).status == "sending"  # nobody reached yet
    queued = db.session.scalars(select(Message)).all()
    assert {(m.status, m.attempts) for m in queued} == {("queued", 1)}
    assert all("SMTP server unreachable" in m.error for m in queued)

    inbox, controller = smtp_server(MAIL_PORT)  # the server is back
    try:
        engage.run_due(utcnow() + timedelta(minutes=2))
    finally:
        controller.stop()
    assert inbox.count() == {"a@example.com": 1, "b@example.com": 1}
    db.session.expire_all()
    assert db.session.get(Broadcast, broadcast.id).status == "sent"


@pytest.mark.parametrize("app_config", [DOWN])
def test_smtp_down_for_good_fails_the_messages_after_five_attempts(app):
    engage.identify("a", email="a@example.com")
    db.session.commit()
    broadcast = engage.create_broadcast(
        "Hello", channel="email", segments=["all"], subject="Hi", body="Hello"
    )
    engage.send_broadcast(broadcast)
    now = utcnow()
    for hours in range(1, 6):
        engage.run_due(now + timedelta(hours=hours * 2))
    message = db.session.scalars(select(Message)).one()
    assert message.status == "failed" and message.attempts == 5
    assert message.error.startswith("gave up after 5 attempts")
    assert db.session.get(Broadcast, broadcast.id).status == "failed"


def test_status_names_the_schedule_and_the_backlog(app):
    before = engage.status()
    assert before["last_tick"] is None and before["schedule_ok"] is False
    assert before["outbox"] == 0 and before["parked"] == 0
    engage.run_due()
    after = engage.status()
    assert after["last_tick"] is not None and after["schedule_ok"] is True


INLINE = {"TESTING": False, "ENGAGE_INLINE_SCHEDULE": True, "ENGAGE_SCHEDULE_INTERVAL": 1}


@pytest.mark.parametrize("app_config", [{**INLINE, "ENGAGE_RECOMPUTE_INTERVAL": 1}])
def test_inline_mode_runs_the_schedule_after_requests_without_a_worker(app):
    recent = engage.create_segment("Recent", {"event": "Logged in", "window": {"last_hours": 1}})
    engage.identify("a", email="a@example.com")
    db.session.commit()
    broadcast = engage.create_broadcast(
        "Soon",
        channel="in_app",
        segments=["all"],
        body="Hi",
        scheduled_at=utcnow() + timedelta(seconds=0.5),
    )
    assert engage.send_broadcast(broadcast).status == "scheduled"
    computed = db.session.get(Segment, recent.id).last_computed_at
    time.sleep(1.1)

    client = app.test_client()
    client.get("/engage/api/filter-schema").close()  # the tick runs once the response is done
    db.session.expire_all()
    assert db.session.get(Broadcast, broadcast.id).status == "sent"
    assert db.session.get(Segment, recent.id).last_computed_at > computed
    tick = engage.status()["last_tick"]
    assert tick is not None

    client.get("/engage/api/filter-schema").close()  # within the interval: no second tick
    assert engage.status()["last_tick"] == tick


@pytest.mark.parametrize("app_config", [{**INLINE, "ENGAGE_INLINE_SCHEDULE": False}])
def test_the_inline_schedule_can_be_switched_off(app):
    app.test_client().get("/engage/api/filter-schema").close()
    assert engage.status()["last_tick"] is None


# --- fuzz: steps are refused at save or run without an exception ------------------------

NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 36500, 36501, 1e6, 1e12, 2**63]),
)
WAITS = st.one_of(
    st.dictionaries(st.sampled_from(["days", "hours", "minutes", "weeks"]), NUMBERS, max_size=3),
    st.builds(lambda t: {"until": t}, st.sampled_from(["09:00", "23:59", "25:00", "9h", "", 9])),
)
SENDS = st.builds(
    lambda channel, subject, body: {"channel": channel, "subject": subject, "body": body},
    st.sampled_from(["email", "push", "in_app", "fax", None]),
    st.sampled_from([None, "", "Hi {{ customer.name }}", "{{ 1/0 }}"]),
    st.sampled_from(["Hi", "", "{{ customer.amount | round }}", "{{ oops", "{% for x in y %}"]),
)
STEPS = st.lists(
    st.one_of(
        st.builds(lambda w: {"wait": w}, WAITS),
        st.builds(lambda s: {"send": s}, SENDS),
        st.builds(lambda v: {"if": {"attribute": "plan", "op": "eq", "value": v}}, NUMBERS),
        st.builds(lambda v: {"exit": v}, st.sampled_from([True, False, 1])),
        st.just({"jump": 1}),
    ),
    max_size=4,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=STEPS)
def test_automation_steps_are_refused_at_save_or_run_without_an_exception(app, steps):
    name = f"Fuzz {uuid.uuid4().hex[:8]}"
    segment = engage.create_segment(name, {"attribute": "fuzz", "op": "eq", "value": name})
    try:
        automation = engage.create_automation(name, trigger={"joins": segment}, steps=steps)
    except ValidationError:
        return  # refused at save, with a typed error
    engage.identify(f"c-{name}", email="c@example.com", fuzz=name, amount=None)
    db.session.commit()
    now = utcnow()
    for days in (0, 1, 40_000):
        engage.run_due(now + timedelta(days=days))
    runs = db.session.scalars(
        select(AutomationRun).where(AutomationRun.automation_id == automation.id)
    ).all()
    assert len(runs) == 1 and runs[0].status != "parked", runs[0].error
