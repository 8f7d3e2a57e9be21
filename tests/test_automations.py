"""Automations: messages that start when a customer joins or leaves a segment.

Time moves with ``engage.run_due(now)``; emails are observed through Flask-Mail's
``record_messages`` (the app is TESTING: sending is suppressed but recorded).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from flask_engage.errors import InvalidAutomation
from flask_engage.models import Automation, AutomationRun, Message, utcnow
from tests.hostapp import create_app, db, engage

TRIAL = {"attribute": "plan", "op": "eq", "value": "trial"}
REMIND = {"send": {"channel": "email", "subject": "Hi {{ customer.name }}", "body": "Finish KYC"}}


@contextmanager
def inbox(app) -> Iterator[list]:
    """Emails dispatched while the block runs."""
    with app.extensions["mail"].record_messages() as outbox:
        yield outbox


def to(outbox: list) -> list[str]:
    return sorted(address for message in outbox for address in message.recipients)


def join_trial(*names: str) -> datetime:
    """Put customers in the trial segment (committed); returns a time just before they joined."""
    before = utcnow()
    for name in names:
        engage.identify(name, email=f"{name}@example.com", plan="trial", name=name.title())
    db.session.commit()
    return before


def trial_automation(steps: list, **options) -> Automation:
    segment = engage.get_segment("trial") or engage.create_segment("Trial", TRIAL)
    return engage.create_automation(
        "Trial nudge", trigger={"joins": segment}, steps=steps, **options
    )


def runs(automation: Automation) -> dict[str, int]:
    return {k: v for k, v in engage.automation_stats(automation)["runs"].items() if v}


def test_kyc_reminder_goes_once_to_the_customer_who_did_not_finish(app):
    t0 = utcnow()
    for name in ("slow", "fast"):
        engage.identify(name, email=f"{name}@example.com", name=name.title())
        engage.track(name, "Signed up", timestamp=t0)
    engage.track("fast", "Completed KYC", timestamp=t0 + timedelta(hours=5))
    db.session.commit()
    pending = engage.create_segment(
        "KYC pending",
        {
            "all": [
                {"event": "Signed up", "window": {"older_than_days": 3}},
                {"event": "Completed KYC", "count": {"op": "eq", "value": 0}},
            ]
        },
    )
    reminder = engage.create_automation("KYC reminder", trigger={"joins": pending}, steps=[REMIND])
    later = t0 + timedelta(days=3, hours=1)
    with inbox(app) as outbox:
        engage.run_due(t0 + timedelta(days=1))
        assert outbox == []
        engage.run_due(later)
        assert to(outbox) == ["slow@example.com"]
        assert outbox[0].subject == "Hi Slow"
        engage.run_due(later)
        engage.recompute(pending, now=later)
        engage.run_due(later + timedelta(minutes=1))
    assert to(outbox) == ["slow@example.com"]
    stats = engage.automation_stats(reminder)
    assert stats["runs"]["completed"] == 1
    assert stats["messages_by_step"] == {0: {"sent": 1}}


def test_wait_then_if_only_messages_customers_who_still_match(app):
    automation = trial_automation(
        [
            {"wait": {"days": 2}},
            {"if": {"event": "Purchase", "count": {"op": "eq", "value": 0}}},
            {"send": {"channel": "email", "subject": "Still thinking?", "body": "Buy now"}},
        ]
    )
    t = join_trial("ann", "bob")
    engage.track("bob", "Purchase", {"amount": 10})
    db.session.commit()
    with inbox(app) as outbox:
        engage.run_due(t + timedelta(days=1))
        assert outbox == [] and runs(automation) == {"waiting": 2}
        engage.run_due(t + timedelta(days=2, minutes=1))
        engage.run_due(t + timedelta(days=2, minutes=1))
    assert to(outbox) == ["ann@example.com"]
    assert runs(automation) == {"completed": 1, "exited": 1}


def test_exit_on_leave_during_the_wait_sends_nothing(app):
    automation = trial_automation([{"wait": {"days": 2}}, REMIND], exit_on_leave=True)
    t = join_trial("ann", "bob")
    engage.identify("bob", plan="pro")
    db.session.commit()
    with inbox(app) as outbox:
        engage.run_due(t + timedelta(days=3))
    assert to(outbox) == ["ann@example.com"]
    assert runs(automation) == {"completed": 1, "exited": 1}


def test_a_late_run_due_does_not_shift_the_schedule(app):
    second = {"send": {"channel": "email", "subject": "Day 2", "body": "Second"}}
    trial_automation([{"wait": {"days": 1}}, REMIND, {"wait": {"days": 1}}, second])
    t = join_trial("ann")
    with inbox(app) as outbox:
        engage.run_due(t + timedelta(days=1, hours=6))  # six hours late
        assert [m.subject for m in outbox] == ["Hi Ann"]
        engage.run_due(t + timedelta(days=2, minutes=1))  # the second wait began at day 1
    assert [m.subject for m in outbox] == ["Hi Ann", "Day 2"]


def test_wait_until_a_time_of_day_in_the_customers_timezone(app):
    trial_automation([{"wait": {"until": "09:00"}}, REMIND])
    t = utcnow()
    engage.identify("ann", email="ann@example.com", plan="trial", timezone="Asia/Tokyo")
    engage.identify("bob", email="bob@example.com", plan="trial")  # ENGAGE_TIMEZONE: UTC
    db.session.commit()

    def next_nine(zone: str) -> datetime:
        local = t.astimezone(ZoneInfo(zone))
        nine = local.replace(hour=9, minute=0, second=0, microsecond=0)
        return nine if nine > local + timedelta(minutes=1) else nine + timedelta(days=1)

    with inbox(app) as outbox:
        for moment in sorted([next_nine("Asia/Tokyo"), next_nine("UTC")]):
            engage.run_due(moment - timedelta(minutes=1))
            engage.run_due(moment + timedelta(minutes=1))
        tokyo_first = next_nine("Asia/Tokyo") < next_nine("UTC")
    expected = ["ann@example.com", "bob@example.com"]
    assert [m.recipients[0] for m in outbox] == (expected if tokyo_first else expected[::-1])


@pytest.mark.parametrize("reentry", [False, True])
def test_reentry(app, reentry):
    automation = trial_automation([REMIND], reentry=reentry)
    with inbox(app) as outbox:
        join_trial("ann")
        engage.identify("ann", plan="pro")
        db.session.commit()
        join_trial("ann")
    assert to(outbox) == ["ann@example.com"] * (2 if reentry else 1)
    entries = db.session.scalars(
        select(AutomationRun.entry).where(AutomationRun.automation_id == automation.id)
    ).all()
    assert sorted(entries) == ([1, 2] if reentry else [1])


def test_leaves_trigger(app):
    segment = engage.create_segment("Trial", TRIAL)
    engage.create_automation("Win back", trigger={"leaves": segment}, steps=[REMIND])
    with inbox(app) as outbox:
        join_trial("ann")
        assert outbox == []
        engage.identify("ann", plan="free")
        db.session.commit()
    assert to(outbox) == ["ann@example.com"]


def test_pausing_holds_runs_and_resuming_continues(app):
    automation = trial_automation([{"wait": {"days": 1}}, REMIND])
    t = join_trial("ann")
    engage.update_automation(automation, active=False)
    join_trial("bob")  # joins while paused: not enrolled
    with inbox(app) as outbox:
        engage.run_due(t + timedelta(days=2))
        assert outbox == [] and runs(automation) == {"waiting": 1}
        engage.update_automation(automation, active=True)
        engage.run_due(t + timedelta(days=2))
    assert to(outbox) == ["ann@example.com"]


def test_deleting_cancels_live_runs(app):
    automation = trial_automation([{"wait": {"days": 1}}, REMIND])
    t = join_trial("ann", "bob")
    engage.delete_automation(automation)
    with inbox(app) as outbox:
        engage.run_due(t + timedelta(days=2))
    assert outbox == []
    live = db.session.scalar(
        select(func.count()).where(AutomationRun.status.in_(["active", "waiting"]))
    )
    assert live == 0 and db.session.get(Automation, automation.id) is None


def run_due_from_two_workers(app, db_kind: str, later) -> None:
    """``run_due(later)`` from two workers at once (PostgreSQL), or in turn (SQLite has
    one writer); fails the test if either raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(2 if db_kind == "postgresql" else 1)

    def worker() -> None:
        try:
            with app.app_context():
                start.wait(timeout=10)
                engage.run_due(later)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    if db_kind == "postgresql":
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:  # SQLite has one writer: workers take turns
        worker()
        worker()
    assert errors == []


def test_two_workers_at_once_send_each_message_once(app, db_kind):
    trial_automation([{"wait": {"days": 1}}, REMIND])
    names = [f"c{i}" for i in range(30)]
    t = join_trial(*names)
    later = t + timedelta(days=1, minutes=1)
    with inbox(app) as outbox:
        run_due_from_two_workers(app, db_kind, later)
    assert to(outbox) == sorted(f"{n}@example.com" for n in names)


def test_a_restarted_worker_resumes_where_the_run_stopped(app):
    automation = trial_automation([{"wait": {"days": 2}}, REMIND])
    t = join_trial("ann")
    later = t + timedelta(days=2, minutes=1)
    assert runs(automation) == {"waiting": 1}
    restarted = create_app(app.config["SQLALCHEMY_DATABASE_URI"])
    with restarted.app_context():
        with inbox(restarted) as outbox:
            engage.run_due(later)
            engage.run_due(later)
        db.engine.dispose()
    with inbox(app) as again:
        engage.run_due(later)
    assert to(outbox) == ["ann@example.com"] and again == []


BAD_STEPS = [
    ([], "steps: expected a non-empty list"),
    ([REMIND, {"send": {"channel": "sms", "body": "x"}}], "steps[1].send.channel: expected one of"),
    ([{"send": {"channel": "email", "body": "x"}}], "steps[0].send.subject:"),
    ([{"send": {"channel": "email", "subject": "x", "body": "{{ oops"}}], "steps[0].send.body:"),
    ([{"send": {"channel": "email", "subject": "x", "body": "x", "to": "y"}}], "steps[0].send.to:"),
    ([{"wait": {"weeks": 1}}], "steps[0].wait.weeks: unknown unit"),
    ([{"wait": {"days": -1}}], "steps[0].wait.days: expected a number >= 0"),
    ([{"wait": {"until": "25:00"}}], "steps[0].wait.until: expected a time of day"),
    ([REMIND, {"if": {"attribute": "plan", "op": "equals", "value": 1}}], "steps[1].if"),
    ([{"jump": 1}], "steps[0]: unknown step 'jump'"),
    ([REMIND, "send"], "steps[1]: expected an object"),
    ([REMIND, {"exit": False}], "steps[1].exit: expected true"),
]
BAD_TRIGGERS = [
    ({"joins": "no-such-segment"}, "trigger.joins: no segment"),
    ({"enters": "trial"}, "trigger.enters: expected 'joins' or 'leaves'"),
    ({"joins": "trial", "leaves": "trial"}, "trigger: expected"),
    ("trial", "trigger: expected"),
]


def test_bad_steps_and_triggers_are_named_and_nothing_is_written(app):
    segment = engage.create_segment("Trial", TRIAL)
    for steps, message in BAD_STEPS:
        with pytest.raises(InvalidAutomation) as info:
            engage.create_automation("Bad", trigger={"joins": segment}, steps=steps)
        assert str(info.value).startswith(message), (steps, str(info.value))
    for trigger, message in BAD_TRIGGERS:
        with pytest.raises(InvalidAutomation) as info:
            engage.create_automation("Bad", trigger=trigger, steps=[REMIND])
        assert str(info.value).startswith(message), (trigger, str(info.value))
    automation = engage.create_automation("Good", trigger={"joins": segment}, steps=[REMIND])
    with pytest.raises(InvalidAutomation, match=r"^steps\[0\]\.wait\.until"):
        engage.update_automation(automation, steps=[{"wait": {"until": "noon"}}])
    assert db.session.scalars(select(Automation.name)).all() == ["Good"]
    assert db.session.get(Automation, automation.id).steps == [REMIND]


@pytest.mark.parametrize("app_config", [{"ENGAGE_FREQUENCY_CAP": {"email": (1, 86400)}}])
def test_frequency_cap_skips_a_second_email_within_the_day(app):
    second = {"send": {"channel": "email", "subject": "Again", "body": "Second"}}
    automation = trial_automation([REMIND, {"wait": {"hours": 1}}, second])
    with inbox(app) as outbox:
        t = join_trial("ann")
        engage.run_due(t + timedelta(hours=2))
    assert [m.subject for m in outbox] == ["Hi Ann"]
    assert engage.automation_stats(automation)["messages_by_step"] == {
        0: {"sent": 1},
        2: {"skipped": 1},
    }
    skipped = db.session.scalars(select(Message).where(Message.status == "skipped")).one()
    assert skipped.error == "frequency_cap"


def test_no_frequency_cap_by_default(app):
    second = {"send": {"channel": "email", "subject": "Again", "body": "Second"}}
    trial_automation([REMIND, {"wait": {"hours": 1}}, second])
    with inbox(app) as outbox:
        t = join_trial("ann")
        engage.run_due(t + timedelta(hours=2))
    assert [m.subject for m in outbox] == ["Hi Ann", "Again"]
