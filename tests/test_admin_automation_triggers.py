"""An automation's trigger in the admin (issues 18 and 19): joining or leaving a segment,
subscribing to or leaving a list, or doing an event (with property conditions); an
automation with a list or event trigger can be edited without losing it."""

from __future__ import annotations

import re
from html import unescape

import pytest
from sqlalchemy import select

from flask_engage.models import Automation
from tests.conftest import ADMIN_TOKEN as TOKEN
from tests.hostapp import db, engage

ADMIN = "/engage/admin/automations"
STEPS = '[{"send": {"channel": "in_app", "body": "Hi"}}]'



@pytest.fixture
def lists(app):
    engage.identify("c-1", email="ada@example.com")
    engage.track("c-1", "Purchase", {"amount": 120})
    db.session.commit()
    engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
    return engage.create_list("Newsletter"), engage.create_list("Waitlist")


def saved(name: str) -> Automation:
    db.session.expire_all()
    return db.session.scalar(select(Automation).where(Automation.name == name))


def post(admin, url: str, **form):
    return admin.post(url, data={"csrf_token": TOKEN, "steps": STEPS, "active": "y", **form})


def flashes(page: str) -> list[str]:
    return [unescape(m) for m in re.findall(r'engage-flash"[^>]*>([^<]*)<', page)]


def test_the_form_offers_segments_lists_and_events(app, lists, admin):
    page = admin.get(f"{ADMIN}/new").get_data(as_text=True)
    kinds = page.split('id="trigger_kind"')[1].split("</select>")[0]
    for label in ("joins the segment", "subscribes to the list", "does the event"):
        assert label in kinds
    chooser = page.split('id="customer_list"')[1].split("</select>")[0]
    assert "Newsletter" in chooser and "Waitlist" in chooser
    assert '<option value="Purchase">' in page.split('id="event-names"')[1]


def test_a_list_trigger_is_saved_shown_and_kept_when_edited(app, lists, admin):
    newsletter, waitlist = lists
    created = post(
        admin,
        f"{ADMIN}/new",
        name="Welcome readers",
        trigger_kind="subscribes",
        customer_list=str(waitlist.id),
        segment="1",
    )
    assert created.status_code == 302
    automation = saved("Welcome readers")
    assert (automation.trigger_kind, automation.trigger_list_id) == ("subscribes", waitlist.id)
    page = admin.get(f"{ADMIN}/{automation.id}").get_data(as_text=True)
    assert re.search(r"subscribes to</strong> the list <a href=\"[^\"]+\">Waitlist</a>", page)

    form = admin.get(f"{ADMIN}/{automation.id}/edit").get_data(as_text=True)
    assert '<option value="subscribes" selected>' in form
    assert re.search(rf'<option value="{waitlist.id}" selected>Waitlist</option>', form)
    # saved again as the form shows it: the trigger stays
    again = post(
        admin,
        f"{ADMIN}/{automation.id}/edit",
        name="Welcome readers",
        trigger_kind="subscribes",
        customer_list=str(waitlist.id),
        segment="1",
    )
    assert again.status_code == 302
    automation = saved("Welcome readers")
    assert (automation.trigger_kind, automation.trigger_list_id) == ("subscribes", waitlist.id)

    left = post(
        admin,
        f"{ADMIN}/{automation.id}/edit",
        name="Welcome readers",
        trigger_kind="unsubscribes",
        customer_list=str(newsletter.id),
        segment="1",
    )
    assert left.status_code == 302
    automation = saved("Welcome readers")
    assert (automation.trigger_kind, automation.trigger_list_id) == ("unsubscribes", newsletter.id)


def test_an_event_trigger_with_property_conditions(app, lists, admin):
    where = '[{"property": "amount", "op": "gte", "value": 100}]'
    created = post(
        admin,
        f"{ADMIN}/new",
        name="Big spender",
        trigger_kind="event",
        event="Purchase",
        where=where,
        segment="1",
    )
    assert created.status_code == 302
    automation = saved("Big spender")
    assert automation.trigger_kind == "event" and automation.trigger_event == "Purchase"
    assert automation.trigger_where == [{"property": "amount", "op": "gte", "value": 100}]
    form = admin.get(f"{ADMIN}/{automation.id}/edit").get_data(as_text=True)
    assert '<option value="event" selected>' in form
    assert 'id="event" name="event" value="Purchase"' in form
    assert "&#34;gte&#34;" in form.split('id="where"')[1].split("</textarea>")[0]

    bad = post(
        admin,
        f"{ADMIN}/{automation.id}/edit",
        name="Big spender",
        trigger_kind="event",
        event="Purchase",
        where="[{",
        segment="1",
    )
    assert bad.status_code == 400
    page = bad.get_data(as_text=True)
    assert any("not valid json" in m.lower() for m in flashes(page)), flashes(page)
    assert "is-invalid" in page.split('id="where"')[0][-120:]
    assert saved("Big spender").trigger_where == [{"property": "amount", "op": "gte", "value": 100}]


@pytest.mark.parametrize(
    "form",
    [
        {"trigger_kind": "subscribes", "customer_list": str(10**30)},
        {"trigger_kind": "subscribes", "customer_list": "424242"},
        {"trigger_kind": "subscribes"},
        {"trigger_kind": "joins", "segment": str(10**30)},
        {"trigger_kind": "event", "event": ""},
        {"trigger_kind": "event", "event": "Purchase", "where": "[" * 10_000},
        {"trigger_kind": "bogus"},
    ],
)
def test_bad_triggers_are_a_400_naming_the_trigger(app, lists, admin, form):
    response = post(admin, f"{ADMIN}/new", name="Bad", **form)
    assert response.status_code == 400
    assert saved("Bad") is None
