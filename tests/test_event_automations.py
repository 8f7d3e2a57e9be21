"""Automations started by events, waiting for events, and branching.

Time moves with ``engage.run_due(now)``; emails are observed through Flask-Mail's
``record_messages`` (the app is TESTING: sending is suppressed but recorded).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest
from sqlalchemy import insert, select

from flask_engage.errors import InvalidAutomation
from flask_engage.models import Automation, AutomationRun, Customer, Event, OutboxItem, utcnow
from tests.hostapp import db, engage
from tests.test_automations import run_due_from_two_workers

BIG_PURCHASE = {"event": "Purchase", "where": [{"property": "amount", "op": "gte", "value": 100}]}
TRIAL = {"attribute": "plan", "op": "eq", "value": "trial"}


def email(subject: str, body: str = "Hello {{ customer.name }}") -> dict:
    return {"send": {"channel": "email", "subject": subject, "body": body}}


@contextmanager
def inbox(app) -> Iterator[list]:
    with app.extensions["mail"].record_messages() as outbox:
        yield outbox


def sent(outbox: list) -> list[tuple[str, str]]:
    """(recipient name, subject) of every email, sorted."""
    return sorted((m.recipients[0].split("@")[0], m.subject) for m in outbox)


def person(name: str, **attributes) -> None:
    engage.identify(name, email=f"{name}@example.com", name=name.title(), **attributes)


def buy(name: str, amount: float, at: datetime | None = None) -> None:
    engage.track(name, "Purchase", {"amount": amount}, timestamp=at)
    db.session.commit()


@pytest.mark.parametrize("reentry, expected", [(True, 4), (False, 1)])
def test_an_event_trigger_sends_once_per_qualifying_event(app, reentry, expected):
    receipt = engage.create_automation(
        "Big purchase thanks",
        trigger=BIG_PURCHASE,
        steps=[email("Thanks for {{ customer.name }}'s order")],
        reentry=reentry,
    )
    person("ann")
    db.session.commit()
    with inbox(app) as outbox:
        buy("ann", 150)
        buy("ann", 50)  # below the condition
        buy("ann", 200)
        engage.track("ann", "Purchase", {"amount": 100})  # two in one commit
        engage.track("ann", "Purchase", {"amount": 300})
        db.session.commit()
        engage.track("ann", "Signed up")  # another event
        db.session.commit()
        engage.run_due()
    assert sent(outbox) == [("ann", "Thanks for Ann's order")] * expected
    assert receipt.trigger == BIG_PURCHASE
    runs = db.session.scalars(
        select(AutomationRun).where(AutomationRun.automation_id == receipt.id)
    ).all()
    assert sorted(run.entry for run in runs) == list(range(1, expected + 1))
    assert len({run.event_id for run in runs}) == expected


def test_an_event_handled_twice_starts_nothing_twice(app):
    engage.create_automation(
        "Thanks", trigger={"event": "Purchase"}, steps=[email("Thanks")], reentry=True
    )
    person("ann")
    with inbox(app) as outbox:
        buy("ann", 10)
        event_id = db.session.scalar(select(Event.id).where(Event.name == "Purchase"))
        # the same event again in the outbox (a replayed job, a retried batch)
        db.session.execute(
            insert(OutboxItem).values(task="event", key=str(event_id), created_at=utcnow())
        )
        db.session.commit()
        engage.run_due()
    assert sent(outbox) == [("ann", "Thanks")]


def test_an_event_trigger_ignores_events_before_it_existed_and_while_paused(app):
    person("ann")
    buy("ann", 500)
    automation = engage.create_automation(
        "Thanks", trigger=BIG_PURCHASE, steps=[email("Thanks")], reentry=True
    )
    with inbox(app) as outbox:
        engage.run_due()
        assert outbox == []
        engage.update_automation(automation, active=False)
        buy("ann", 500)
        engage.update_automation(automation, active=True)
        engage.run_due()
        assert outbox == []
        buy("ann", 500)
    assert sent(outbox) == [("ann", "Thanks")]


def test_an_automation_can_move_from_a_segment_trigger_to_an_event(app):
    trial = engage.create_segment("Trial", TRIAL)
    automation = engage.create_automation("Nudge", trigger={"joins": trial}, steps=[email("Hi")])
    automation = engage.update_automation(automation, trigger={"event": "Signed up"})
    assert automation.trigger == {"event": "Signed up"}
    with inbox(app) as outbox:
        person("ann", plan="trial")  # joins the segment: no longer a trigger
        db.session.commit()
        engage.track("bob", "Signed up")
        person("bob")
        db.session.commit()
    assert sent(outbox) == [("bob", "Hi")]


def wait_for_purchase_automation(**options) -> Automation:
    trial = engage.get_segment("trial") or engage.create_segment("Trial", TRIAL)
    return engage.create_automation(
        "Trial conversion",
        trigger={"joins": trial},
        steps=[
            {
                "wait_for": {
                    **BIG_PURCHASE,
                    "days": 3,
                    "then": [email("Thanks for buying")],
                    "else": [email("Still thinking?"), {"wait": {"days": 1}}, email("Last call")],
                }
            },
            email("Tips"),
        ],
        **options,
    )


def join_trial(*names: str) -> datetime:
    before = utcnow()
    for name in names:
        person(name, plan="trial")
    db.session.commit()
    return before


def test_wait_for_takes_then_when_the_event_comes_in_time(app):
    automation = wait_for_purchase_automation()
    t = join_trial("ann", "bob")
    with inbox(app) as outbox:
        buy("bob", 20)  # does not match the condition: still waiting
        buy("ann", 120)  # wakes ann's run at once
        assert sent(outbox) == [("ann", "Thanks for buying"), ("ann", "Tips")]
        engage.run_due(t + timedelta(days=1))
        assert len(outbox) == 2
    stats = engage.automation_stats(automation)
    assert stats["runs"]["completed"] == 1 and stats["runs"]["waiting"] == 1


def test_wait_for_takes_else_when_the_time_is_up(app):
    wait_for_purchase_automation()
    t = join_trial("ann", "bob")
    with inbox(app) as outbox:
        engage.run_due(t + timedelta(days=2))
        assert outbox == []
        buy("bob", 999, at=t + timedelta(days=3, hours=1))  # too late
        engage.run_due(t + timedelta(days=3, hours=2))
        assert sent(outbox) == [("ann", "Still thinking?"), ("bob", "Still thinking?")]
        engage.run_due(t + timedelta(days=4, hours=2))
    assert sent(outbox) == sorted(
        [
            (name, subject)
            for name in ("ann", "bob")
            for subject in ("Still thinking?", "Last call", "Tips")
        ]
    )


def test_wait_for_counts_an_event_in_time_even_when_it_is_seen_late(app):
    """An event recorded in time is found at the deadline even if no one woke the run
    (a worker was down): the run takes ``then``."""
    wait_for_purchase_automation()
    t = join_trial("ann")
    with inbox(app) as outbox:
        db.session.execute(  # written behind Engage's back: no outbox row, no wake-up
            insert(Event).values(
                customer_id=db.session.scalar(select(AutomationRun.customer_id)),
                name="Purchase",
                properties={"amount": 150},
                occurred_at=t + timedelta(days=1),
            )
        )
        db.session.commit()
        engage.run_due(t + timedelta(days=3, minutes=1))
    assert sent(outbox) == [("ann", "Thanks for buying"), ("ann", "Tips")]


def test_only_events_after_reaching_the_step_count(app):
    wait_for_purchase_automation()
    buy("ann", 500)  # before the run started
    t = join_trial("ann")
    with inbox(app) as outbox:
        engage.run_due(t + timedelta(days=3, minutes=1))
    assert ("ann", "Still thinking?") in sent(outbox)


def test_two_workers_take_each_branch_once(app, db_kind):
    wait_for_purchase_automation()
    names = [f"c{i}" for i in range(20)]
    t = join_trial(*names)
    ids = dict(db.session.execute(select(Customer.external_id, Customer.id)).all())
    # purchases written behind Engage's back (no wake-up): both workers meet every run
    # at its deadline, half of them with a purchase in time
    db.session.execute(
        insert(Event),
        [
            {
                "customer_id": ids[name],
                "name": "Purchase",
                "properties": {"amount": 100},
                "occurred_at": t + timedelta(hours=1),
            }
            for name in names[::2]
        ],
    )
    db.session.commit()
    later = t + timedelta(days=3, minutes=1)
    with inbox(app) as outbox:
        run_due_from_two_workers(app, db_kind, later)
    expected = [(n, "Thanks for buying") for n in names[::2]]
    expected += [(n, "Still thinking?") for n in names[1::2]]
    expected += [(n, "Tips") for n in names[::2]]
    assert sent(outbox) == sorted(expected)


def test_if_else_branch(app):
    trial = engage.create_segment("Trial", TRIAL)
    automation = engage.create_automation(
        "Welcome",
        trigger={"joins": trial},
        steps=[
            {
                "branch": {
                    "if": {"attribute": "city", "op": "eq", "value": "Lagos"},
                    "then": [email("Hello Lagos")],
                    "else": [email("Hello world"), {"exit": True}],
                }
            },
            email("See you"),
        ],
    )
    with inbox(app) as outbox:
        person("ann", plan="trial", city="Lagos")
        person("bob", plan="trial", city="Accra")
        db.session.commit()
    assert sent(outbox) == [("ann", "Hello Lagos"), ("ann", "See you"), ("bob", "Hello world")]
    stats = engage.automation_stats(automation)
    assert stats["runs"]["completed"] == 1 and stats["runs"]["exited"] == 1
    outline = [(s["step"], s["depth"], s["arm"], s["kind"]) for s in stats["steps"]]
    assert outline == [
        (0, 0, None, "branch"),
        (1, 1, "then", "send"),
        (3, 1, "else", "send"),
        (4, 1, "else", "exit"),
        (5, 0, None, "send"),
    ]
    assert {step: counts["sent"] for step, counts in stats["outcomes_by_step"].items()} == {
        1: 1,
        3: 1,
        5: 1,
    }


def test_branches_nest(app):
    engage.create_automation(
        "Nested",
        trigger={"event": "Signed up"},
        steps=[
            {
                "branch": {
                    "if": {"attribute": "plan", "op": "eq", "value": "pro"},
                    "then": [
                        {
                            "branch": {
                                "if": {"attribute": "city", "op": "eq", "value": "Lagos"},
                                "then": [email("Pro in Lagos")],
                                "else": [email("Pro elsewhere")],
                            }
                        }
                    ],
                    "else": [email("Free")],
                }
            }
        ],
    )
    with inbox(app) as outbox:
        for name, plan, city in [("ann", "pro", "Lagos"), ("bob", "pro", "Accra"), ("cat", "", "")]:
            person(name, plan=plan, city=city)
            engage.track(name, "Signed up")
        db.session.commit()
    assert sent(outbox) == [("ann", "Pro in Lagos"), ("bob", "Pro elsewhere"), ("cat", "Free")]


BAD = [
    ({"event": ""}, [email("x")], "trigger.event: name must not be empty"),
    (
        {"event": "Purchase", "where": [{"property": "amount", "op": "bigger", "value": 1}]},
        [email("x")],
        "trigger.where[0].op: unknown operator",
    ),
    ({"event": "Purchase", "window": {"last_days": 1}}, [email("x")], "trigger.window: unknown"),
    ({"event": "x"}, [{"wait_for": {"event": "Purchase"}}], "steps[0].wait_for: say how long"),
    (
        {"event": "x"},
        [{"wait_for": {"event": "Purchase", "days": -1}}],
        "steps[0].wait_for.days: expected a number >= 0",
    ),
    (
        {"event": "x"},
        [{"wait_for": {"event": "Purchase", "days": 1, "then": [{"jump": 1}]}}],
        "steps[0].wait_for.then[0]: unknown step 'jump'",
    ),
    (
        {"event": "x"},
        [{"wait_for": {"event": "Purchase", "days": 1, "else": "x"}}],
        "steps[0].wait_for.else: expected a list",
    ),
    ({"event": "x"}, [{"wait_for": {"days": 1}}], "steps[0].wait_for.event: name must be"),
    (
        {"event": "x"},
        [{"wait_for": {"event": "P", "days": 1, "timeout": 2}}],
        "steps[0].wait_for.timeout: unknown field",
    ),
    ({"event": "x"}, [{"branch": {"then": []}}], "steps[0].branch: expected {'if'"),
    (
        {"event": "x"},
        [{"branch": {"if": {"attribute": "a", "op": "nope", "value": 1}}}],
        "steps[0].branch.if: ",
    ),
    ({"event": "x"}, [{"goto": 3}], "steps[0]: unknown step 'goto'"),
]


def test_bad_event_triggers_and_branches_are_named_and_nothing_is_written(app):
    for trigger, steps, message in BAD:
        with pytest.raises(InvalidAutomation) as info:
            engage.create_automation("Bad", trigger=trigger, steps=steps)
        assert str(info.value).startswith(message), (trigger, steps, str(info.value))
    deep: list = [email("x")]
    for _ in range(10):
        deep = [{"branch": {"if": TRIAL, "then": deep}}]
    with pytest.raises(InvalidAutomation, match="nest at most"):
        engage.create_automation("Deep", trigger={"event": "x"}, steps=deep)
    assert db.session.scalars(select(Automation)).all() == []


def test_a_click_starts_an_automation_and_a_scanner_does_not(app, client):
    engage.create_automation(
        "Clicked the sale",
        trigger={
            "event": "Email clicked",
            "where": [{"property": "machine", "op": "is_false"}],
        },
        steps=[email("Still deciding?")],
    )
    person("ann")
    person("bob")
    db.session.commit()
    broadcast = engage.create_broadcast(
        "Sale",
        channel="email",
        segments=["all"],
        subject="Sale",
        body='<a href="https://shop.example/sale">Sale</a>',
    )
    with inbox(app) as news:
        engage.send_broadcast(broadcast)
    links = {
        m.recipients[0].split("@")[0]: re.search(
            r'href="https://app\.example\.com([^"]*)"', m.html
        )[1]
        for m in news
    }
    with inbox(app) as outbox:
        client.get(
            links["bob"], headers={"User-Agent": "Mozilla/5.0 (compatible; Mimecast)"}
        ).close()
        client.get(
            links["ann"], headers={"User-Agent": "Mozilla/5.0 (X11; Linux) Firefox/128"}
        ).close()
    assert sent(outbox) == [("ann", "Still deciding?")]


def test_the_admin_shows_an_event_triggered_branching_automation(app, client):
    automation = engage.create_automation(
        "Thanks",
        trigger=BIG_PURCHASE,
        steps=[
            {"wait_for": {"event": "Paid", "days": 1, "then": [email("Paid")], "else": []}},
            {"branch": {"if": TRIAL, "then": [email("Trial")]}},
        ],
    )
    for url in ("/engage/admin/automations/", f"/engage/admin/automations/{automation.id}"):
        response = client.get(url)
        assert response.status_code == 200, url
        assert b"records <strong>Purchase</strong>" in response.data
    assert client.get(f"/engage/admin/automations/{automation.id}/edit").status_code == 200
