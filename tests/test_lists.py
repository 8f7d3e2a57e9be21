"""Lists from Python: members added by hand, in filters, broadcasts and automations.

Emails are observed through Flask-Mail's ``record_messages`` (the app is TESTING);
every write of ``add_to_list``/``remove_from_list`` is the host's, kept by a commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import func, select

from flask_engage.errors import InvalidFilter, NotFound, StateError, ValidationError
from flask_engage.models import Customer, ListMember
from tests.hostapp import User, db, engage

PRO = {"attribute": "plan", "op": "eq", "value": "pro"}
WELCOME = {"send": {"channel": "email", "subject": "Welcome", "body": "Hello {{ customer.id }}"}}


@contextmanager
def inbox(app) -> Iterator[list]:
    with app.extensions["mail"].record_messages() as outbox:
        yield outbox


def to(outbox: list) -> list[str]:
    return sorted(address for message in outbox for address in message.recipients)


def people(*ids: int, plan: str = "free") -> None:
    for customer_id in ids:
        engage.identify(customer_id, email=f"u{customer_id}@example.com", plan=plan)
    db.session.commit()


def on_list(customer_list) -> list[str]:
    db.session.expire_all()
    return [customer.external_id for customer in engage.list_members(customer_list)]


def in_segment(segment) -> list[str]:
    db.session.expire_all()
    return [customer.external_id for customer in engage.members(segment)]


def test_membership_add_and_remove_are_idempotent(app):
    people(1, 2)
    news = engage.create_list("Newsletter", description="Monthly news")
    assert (news.slug, news.double_optin, news.public) == ("newsletter", False, False)
    assert engage.add_to_list(news, 1) is True
    assert engage.add_to_list("newsletter", 1) is False
    assert engage.add_to_list(news.id, "1") is False
    db.session.commit()
    assert on_list(news) == ["1"]
    assert engage.list_counts(news) == {"subscribed": 1, "pending": 0, "unsubscribed": 0}
    assert engage.remove_from_list(news, 1) is True
    assert engage.remove_from_list(news, 1) is False
    assert engage.remove_from_list(news, "nobody") is False  # unknown: nothing written
    db.session.commit()
    assert on_list(news) == []
    assert db.session.scalar(select(func.count()).select_from(ListMember)) == 0
    assert engage.get_customer("nobody") is None


def test_adding_is_the_hosts_transaction_and_creates_unknown_customers(app):
    news = engage.create_list("Newsletter")
    engage.add_to_list(news, "walk-in")
    db.session.rollback()
    assert on_list(news) == [] and engage.get_customer("walk-in") is None
    engage.add_to_list(news, "walk-in")
    db.session.commit()
    assert on_list(news) == ["walk-in"]
    assert in_segment("all") == ["walk-in"]  # a new customer is evaluated like any other


def test_the_list_filter_follows_membership_incrementally(app):
    people(1, 2, 3)
    beta = engage.create_list("Beta testers")
    engage.add_to_list(beta, 1)
    engage.add_to_list(beta, 2)
    db.session.commit()
    testers = engage.create_segment("Testers", {"list": "beta-testers", "op": "in"})
    others = engage.create_segment("Others", {"list": beta.id, "op": "not_in"})
    assert in_segment(testers) == ["1", "2"] and in_segment(others) == ["3"]
    engage.unsubscribe_from_list(beta, 2)
    engage.add_to_list(beta, 3)
    db.session.commit()  # no recompute: the changes re-evaluate those customers
    assert in_segment(testers) == ["1", "3"] and in_segment(others) == ["2"]
    assert engage.count({"list": str(beta.id)}) == 2
    assert engage.list_counts(beta) == {"subscribed": 2, "pending": 0, "unsubscribed": 1}


def test_bad_list_conditions_name_the_path(app):
    engage.create_list("Beta")
    for bad, message in [
        ({"list": "nope"}, "filters.list: no list 'nope'"),
        ({"all": [{"list": "beta", "op": "is"}]}, "filters.all[0].op: unknown operator 'is'"),
        ({"list": True}, "filters.list: expected a list id or slug"),
        ({"list": "\u00b9"}, "filters.list: no list '\u00b9'"),  # a digit, but not 0-9
        ({"list": 10**30}, "filters.list: no list 1000000000000000000000000000000"),
        ({"list": "beta", "extra": 1}, "filters"),
    ]:
        with pytest.raises(InvalidFilter) as info:
            engage.create_segment("Bad", bad)
        assert str(info.value).startswith(message), str(info.value)
    assert engage.get_segment("bad") is None


def test_a_renamed_list_keeps_the_segments_that_name_it(app):
    people(1)
    beta = engage.create_list("Beta")
    engage.add_to_list(beta, 1)
    db.session.commit()
    testers = engage.create_segment("Testers", {"any": [{"list": "beta"}]})
    engage.update_list(beta, name="Early access", redirect_url="https://example.com/thanks")
    assert engage.get_segment("testers").filters == {"any": [{"list": "early-access"}]}
    assert engage.get_list("early-access").redirect_url == "https://example.com/thanks"
    assert engage.recompute(testers)[0].left == 0 and in_segment(testers) == ["1"]
    with pytest.raises(ValidationError, match="^redirect_url: expected an absolute http"):
        engage.update_list(beta, redirect_url="javascript:alert(1)")
    with pytest.raises(ValidationError, match="^name: a list named 'Early access'"):
        engage.create_list("Early access")


def test_a_broadcast_to_a_segment_and_a_list_sends_one_message_per_customer(app):
    people(1, 2, plan="pro")
    people(3, 4)
    news = engage.create_list("Newsletter")
    for customer_id in (2, 3):
        engage.add_to_list(news, customer_id)
    engage.add_to_list(news, 4)
    engage.unsubscribe_from_list(news, 4)
    db.session.commit()
    pro = engage.create_segment("Pro", PRO)
    broadcast = engage.create_broadcast(
        "Launch", channel="email", segments=[pro], lists=[news], subject="Launch", body="Hi"
    )
    with inbox(app) as sent:
        engage.send_broadcast(broadcast)
    assert to(sent) == ["u1@example.com", "u2@example.com", "u3@example.com"]
    assert engage.broadcast_counts(broadcast)["sent"] == 3
    only_list = engage.create_broadcast(
        "News only", channel="email", lists=["newsletter"], subject="News", body="Hi"
    )
    with inbox(app) as sent:
        engage.send_broadcast(only_list)
    assert to(sent) == ["u2@example.com", "u3@example.com"]


def test_broadcast_audience_is_checked(app):
    archived = engage.create_list("Old")
    engage.archive_list(archived)
    for kwargs, message in [
        ({}, "segments: choose at least one segment or list"),
        ({"lists": ["nope"]}, "lists[0]: no list 'nope'"),
        (
            {"lists": ["old"]},
            "lists[0]: list 'Old' is archived: reopen it, or take it out of the audience",
        ),
    ]:
        with pytest.raises(ValidationError) as info:
            engage.create_broadcast("B", channel="email", subject="S", body="B", **kwargs)
        assert str(info.value) == message


def test_customers_deleted_by_the_host_get_no_list_broadcast(app):
    db.session.add_all([User(id=1, email="kept@example.com"), User(id=2, email="gone@example.com")])
    db.session.commit()
    news = engage.create_list("Newsletter")
    engage.add_to_list(news, 1)
    engage.add_to_list(news, 2)
    db.session.commit()
    db.session.delete(db.session.get(User, 2))  # tracked with on_delete="keep"
    db.session.commit()
    assert engage.get_customer(2).deleted_at is not None
    assert on_list(news) == ["1"]
    broadcast = engage.create_broadcast(
        "News", channel="email", lists=[news], subject="News", body="Hi"
    )
    with inbox(app) as sent:
        engage.send_broadcast(broadcast)
    assert to(sent) == ["kept@example.com"]


def test_the_subscribe_trigger_starts_an_automation_once(app):
    people(1, 2)
    news = engage.create_list("Newsletter")
    welcome = engage.create_automation(
        "Welcome", trigger={"subscribes": news}, steps=[WELCOME], exit_on_leave=True
    )
    assert welcome.trigger == {"subscribes": news.id}
    with inbox(app) as sent:
        engage.add_to_list(news, 1)
        db.session.commit()
        engage.add_to_list(news, 1)  # already subscribed: nothing happens
        engage.unsubscribe_from_list(news, 1)
        db.session.commit()
        engage.add_to_list(news, 1)  # back again: no second run without reentry
        db.session.commit()
    assert to(sent) == ["u1@example.com"]
    assert engage.automation_stats(welcome)["runs"]["completed"] == 1

    again = engage.create_automation(
        "Every time", trigger={"subscribes": "newsletter"}, steps=[WELCOME], reentry=True
    )
    with inbox(app) as sent:
        engage.add_to_list(news, 2)
        db.session.commit()
        engage.remove_from_list(news, 2)
        db.session.commit()
        engage.add_to_list(news, 2)
        db.session.commit()
    assert to(sent) == ["u2@example.com"] * 3  # twice from "Every time", once from "Welcome"
    assert engage.automation_stats(again)["runs"]["completed"] == 2


def test_the_unsubscribe_trigger_and_exit_on_leave(app):
    people(1)
    news = engage.create_list("Newsletter")
    goodbye = engage.create_automation(
        "Goodbye",
        trigger={"unsubscribes": news},
        steps=[{"send": {"channel": "email", "subject": "Sorry to see you go", "body": "Bye"}}],
    )
    drip = engage.create_automation(
        "Drip",
        trigger={"subscribes": news},
        steps=[{"wait": {"days": 2}}, WELCOME],
        exit_on_leave=True,
    )
    with inbox(app) as sent:
        engage.add_to_list(news, 1)
        db.session.commit()
        engage.unsubscribe_from_list(news, 1)
        db.session.commit()
    assert [message.subject for message in sent] == ["Sorry to see you go"]
    assert engage.automation_stats(drip)["runs"]["exited"] == 1
    assert engage.automation_stats(goodbye)["runs"]["completed"] == 1


def test_lists_in_use_cannot_be_archived_or_deleted(app):
    news = engage.create_list("Newsletter")
    segment = engage.create_segment("Readers", {"list": "newsletter"})
    automation = engage.create_automation("Welcome", trigger={"subscribes": news}, steps=[WELCOME])
    with pytest.raises(StateError, match="cannot be archived: still used by Welcome"):
        engage.archive_list(news)
    with pytest.raises(StateError, match="cannot be deleted: still used by Readers, Welcome"):
        engage.delete_list(news)
    engage.update_automation(automation, active=False)
    archived = engage.archive_list(news)  # a paused automation does not hold it
    assert archived.archived_at is not None and engage.lists() == []
    with pytest.raises(StateError, match="archived and takes no new subscribers"):
        engage.add_to_list(news, 1)
    engage.archive_list(news, archived=False)
    engage.delete_automation(automation)
    engage.delete_segment(segment)
    engage.add_to_list(news, 1)
    db.session.commit()
    engage.delete_list(news)
    assert engage.get_list("newsletter") is None
    assert db.session.scalar(select(func.count()).select_from(ListMember)) == 0
    with pytest.raises(NotFound, match="^list: no list 'newsletter'"):
        engage.add_to_list("newsletter", 1)


def test_forget_erases_list_memberships(app):
    people(1, 2)
    news = engage.create_list("Newsletter")
    engage.add_to_list(news, 1)
    engage.add_to_list(news, 2)
    db.session.commit()
    engage.forget(1)
    db.session.commit()
    assert on_list(news) == ["2"]
    assert engage.list_history(news, 1)[-1].subscribers == 1
    owner = db.session.scalars(select(ListMember.customer_id)).all()
    assert owner == [db.session.scalar(select(Customer.id).where(Customer.external_id == "2"))]


def test_merge_moves_list_memberships(app):
    people(1, 2)
    news, beta = engage.create_list("Newsletter"), engage.create_list("Beta")
    engage.add_to_list(news, "1")
    engage.add_to_list(beta, "1")
    engage.add_to_list(beta, "2")
    engage.unsubscribe_from_list(beta, "2")
    db.session.commit()
    engage.merge("1", "2")
    assert on_list(news) == ["2"]
    assert on_list(beta) == []  # the destination's own status wins
    assert engage.list_counts(beta) == {"subscribed": 0, "pending": 0, "unsubscribed": 1}


def test_import_into_a_list(app, tmp_path):
    news = engage.create_list("Newsletter")
    people(2)
    engage.add_to_list(news, 2)
    engage.unsubscribe_from_list(news, 2)
    db.session.commit()
    path = tmp_path / "people.csv"
    path.write_text("id,email\n1,a@example.com\n2,b@example.com\n3,c@example.com\n")
    runner = app.test_cli_runner()
    result = runner.invoke(args=["engage", "import", str(path), "--list", "newsletter"])
    assert result.exit_code == 0, result.output
    assert "3 customers imported into list 'newsletter'" in result.output
    assert on_list(news) == ["1", "3"]  # who unsubscribed stays unsubscribed
    missing = runner.invoke(args=["engage", "import", str(path), "--list", "nope"])
    assert missing.exit_code == 1 and "list: no list 'nope'" in missing.output


def test_history_counts_subscribers_per_day(app):
    people(1, 2)
    news = engage.create_list("Newsletter")
    engage.add_to_list(news, 1)
    engage.add_to_list(news, 2)
    db.session.commit()
    engage.remove_from_list(news, 2)
    db.session.commit()
    points = engage.list_history(news, 3)
    assert [point.subscribers for point in points] == [0, 0, 1]
    assert points[-1]["date"] == points[-2].date.fromordinal(points[-2].date.toordinal() + 1)
    with pytest.raises(ValidationError, match="^days:"):
        engage.list_history(news, 0)


def test_the_admin_shows_automations_started_by_a_list(app, client):
    news = engage.create_list("Newsletter")
    automation = engage.create_automation("Welcome", trigger={"subscribes": news}, steps=[WELCOME])
    index = client.get("/engage/admin/automations/")
    assert index.status_code == 200 and b"Newsletter" in index.data
    page = client.get(f"/engage/admin/automations/{automation.id}")
    assert page.status_code == 200 and b"subscribes to" in page.data
    builder = client.get("/engage/admin/segments/new")  # the list condition offers it
    assert builder.status_code == 200 and b"newsletter" in builder.data
