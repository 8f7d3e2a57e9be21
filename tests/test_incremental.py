"""Incremental evaluation re-checks only the segments that what changed can affect."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import select, update

from flask_engage.changes import Changes, dump, load, union
from flask_engage.channels import Channel
from flask_engage.channels.base import _registry as channel_registry
from flask_engage.db import operation_session
from flask_engage.models import Customer, OutboxItem, Segment, utcnow
from flask_engage.outbox import add_to_outbox
from flask_engage.segments.membership import evaluate_customers
from tests.hostapp import db, engage


def ids(segment):
    return sorted(c.external_id for c in engage.members(segment))


def set_attributes(customer_id, **attributes):
    """Change a customer's stored attributes without Engage noticing (no evaluation)."""
    with operation_session() as session:
        customer = session.get(Customer, customer_id)
        session.execute(
            update(Customer)
            .where(Customer.id == customer_id)
            .values(attributes={**customer.attributes, **attributes})
        )


def evaluate(customer_id, changes, now=None):
    with operation_session() as session:
        return evaluate_customers(session, [customer_id], now or utcnow(), changes)


def test_a_change_to_one_attribute_rechecks_only_segments_that_read_it(app):
    ada = engage.identify(1, plan="pro", city="Lagos")
    db.session.commit()
    pro = engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
    lagos = engage.create_segment("Lagos", {"attribute": "city", "op": "eq", "value": "Lagos"})
    assert ids(pro) == ids(lagos) == ["1"]

    set_attributes(ada.id, plan="free", city="Accra")
    done = evaluate(ada.id, Changes(attributes={"plan"}))
    assert pro.id in done.evaluated and lagos.id not in done.evaluated
    assert ids(pro) == [] and ids(lagos) == ["1"]  # the city segment was not re-checked

    done = evaluate(ada.id, Changes(attributes={"city"}))
    assert done.evaluated == (lagos.id,)
    assert ids(lagos) == []

    # an event nobody's filter mentions re-checks nothing
    assert evaluate(ada.id, Changes(events={"Logged in"})).evaluated == ()


def test_a_segment_referring_to_another_is_rechecked_when_the_other_ones_inputs_change(app):
    ada = engage.identify(1, plan="free")
    engage.track(1, "Purchase", {"amount": 5})
    db.session.commit()
    engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
    buyers = engage.create_segment(
        "Pro buyers", {"all": [{"segment": "pro"}, {"event": "Purchase"}]}
    )
    nested = engage.create_segment("Not pro buyers", {"not": {"segment": buyers.slug}})
    assert ids(buyers) == [] and ids(nested) == ["1"]

    set_attributes(ada.id, plan="pro")
    done = evaluate(ada.id, Changes(attributes={"plan"}))
    assert {buyers.id, nested.id} <= set(done.evaluated)
    assert ids(buyers) == ["1"] and ids(nested) == []


def test_unknown_changes_recheck_every_segment_and_stale_time_based_ones_are_rechecked(app):
    ada = engage.identify(1, plan="pro")
    engage.track(1, "Logged in")
    db.session.commit()
    pro = engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
    active = engage.create_segment("Active", {"event": "Logged in", "window": {"last_days": 7}})
    everyone = db.session.query(Segment.id).count()
    assert len(evaluate(ada.id, None).evaluated) == everyone

    unrelated = Changes(attributes={"city"})
    assert active.id not in evaluate(ada.id, unrelated).evaluated
    # the schedule has not recomputed it for longer than ENGAGE_RECOMPUTE_INTERVAL
    later = utcnow() + timedelta(seconds=app.config["ENGAGE_RECOMPUTE_INTERVAL"] + 60)
    done = evaluate(ada.id, unrelated, later)
    assert active.id in done.evaluated and pro.id not in done.evaluated


# -- what tracking records, and what the evaluate job then re-checks --------------


def queued_changes():
    """The evaluate rows waiting in the host session's transaction: customer id ->
    the changes its rows record (None for "anything")."""
    rows = db.session.execute(
        select(OutboxItem.key, OutboxItem.changes)
        .where(OutboxItem.task == "evaluate")
        .order_by(OutboxItem.id)
    )
    found: dict[int, list] = {}
    for key, changes in rows:
        found.setdefault(int(key), []).append(None if changes is None else json.loads(changes))
    return found


def test_tracking_records_what_changed_on_each_evaluate_row(app):
    ada = engage.identify(1, plan="pro", city="Lagos")
    db.session.commit()

    engage.identify(1, plan="free", city="Lagos")  # the city stays the same
    engage.track(1, "Purchase", {"amount": 5})
    assert queued_changes() == {ada.id: [["attribute:plan"], ["event:Purchase"]]}
    db.session.commit()

    engage.identify(1, email="ada@example.com")
    assert queued_changes() == {ada.id: [["attribute:email"]]}
    db.session.commit()

    bob = engage.identify(2, plan="pro")  # new: anything may have changed
    assert queued_changes() == {bob.id: [None]}
    db.session.commit()

    engage.identify(1, plan="free", city="Lagos")  # nothing changes: nothing to evaluate
    assert queued_changes() == {}
    db.session.commit()


def test_an_attribute_changing_type_but_not_value_is_a_change(app):
    engage.identify(1, beta=1)
    db.session.commit()
    ada = engage.identify(1, beta=True)
    assert list(queued_changes().values()) == [[["attribute:beta"]]]
    db.session.commit()
    assert db.session.get(Customer, ada.id).attributes["beta"] is True


def test_the_evaluate_job_rechecks_only_segments_reading_what_was_tracked(app):
    ada = engage.identify(1, plan="pro", city="Lagos")
    db.session.commit()
    pro = engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
    lagos = engage.create_segment("Lagos", {"attribute": "city", "op": "eq", "value": "Lagos"})
    buyers = engage.create_segment("Buyers", {"event": "Purchase"})
    assert ids(pro) == ids(lagos) == ["1"] and ids(buyers) == []

    set_attributes(ada.id, city="Accra")  # unnoticed: only a re-check of Lagos sees it
    engage.identify(1, plan="free")
    db.session.commit()
    assert ids(pro) == [] and ids(lagos) == ["1"]

    engage.track(1, "Purchase")
    db.session.commit()
    assert ids(buyers) == ["1"] and ids(lagos) == ["1"]

    # a row that says nothing about what changed (written before revision 0008,
    # or by a merge) re-checks every segment
    with operation_session() as session:
        add_to_outbox(session, "evaluate", [ada.id])
    assert ids(lagos) == []


def test_rows_for_one_customer_are_combined_and_anything_wins(app):
    ada = engage.identify(1, plan="pro", city="Lagos")
    db.session.commit()
    lagos = engage.create_segment("Lagos", {"attribute": "city", "op": "eq", "value": "Lagos"})
    set_attributes(ada.id, city="Accra")
    with operation_session() as session:
        add_to_outbox(session, "evaluate", [ada.id], changes=Changes(attributes={"plan"}))
        add_to_outbox(session, "evaluate", [ada.id])
    assert ids(lagos) == []


def test_stored_changes_read_back_and_anything_unreadable_means_anything():
    change = Changes(attributes={"plan", "email"}, events={"Purchase"}, lists=True)
    assert load(dump(change)) == Changes.from_tokens(change.tokens())
    assert load(dump(change)).tokens() == change.tokens()
    assert dump(None) is None and load(None) is None
    for garbage in ("not json", "{}", '["ok", 3]', "null"):
        assert load(garbage) is None
    assert union([Changes(attributes={"a"}), Changes(events={"E"})]).tokens() == {
        "attribute:a",
        "event:E",
    }
    assert union([Changes(lists=True), None]) is None


class PhoneChannel(Channel):
    """A host's channel whose address is an attribute (as in docs/extending.md)."""

    name = "sms-test"
    label = "SMS"
    needs_subject = False

    def reachable(self):
        return Customer.attributes["phone"].as_string().is_not(None)

    def reads(self):
        return ("attribute:phone",)

    def send(self, outgoing, connection):
        raise AssertionError("not sent in this test")


class FaxChannel(PhoneChannel):
    """The same, without saying what it reads: every change re-checks it."""

    name = "fax-test"

    def reachable(self):
        return Customer.attributes["fax"].as_string().is_not(None)

    reads = Channel.reads


def test_a_host_channel_s_segments_are_rechecked_when_its_address_changes(app, monkeypatch):
    for channel in (PhoneChannel(), FaxChannel()):
        monkeypatch.setitem(channel_registry, channel.name, channel)
    engage.identify(1, plan="free")
    db.session.commit()
    sms = engage.create_segment("Textable", {"channel": "sms-test", "op": "subscribed"})
    fax = engage.create_segment("Faxable", {"channel": "fax-test", "op": "subscribed"})
    assert ids(sms) == ids(fax) == []

    engage.identify(1, phone="+234 800 000 0000")
    db.session.commit()
    assert ids(sms) == ["1"]
    engage.identify(1, fax="+234 800 000 0001")
    db.session.commit()
    assert ids(fax) == ["1"]
