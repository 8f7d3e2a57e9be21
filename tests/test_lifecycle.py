"""Data lifecycle: deletes forget or keep the customer, erasure (Python, CLI, HTTP), and
ORM bulk UPDATE/DELETE statements tracked like unit-of-work changes."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from flask_engage.models import (
    AutomationRun,
    Customer,
    Event,
    Membership,
    Message,
    PushSubscription,
    Segment,
    Unsubscription,
    utcnow,
)
from tests import embedapp
from tests.conftest import database_url
from tests.embedapp import Account, Partner, Payment, Tier, db, engage

AUTH = ("sdk-key", "sdk-secret")
PRO = {"attribute": "tier", "op": "eq", "value": "pro"}


@pytest.fixture
def app(db_kind, tmp_path):
    app = embedapp.create_app(database_url(db_kind, tmp_path))
    if db_kind == "postgresql":
        embedapp.reset_postgres(app)
    with app.app_context():
        db.create_all()
        engage.create_all()
        yield app
        db.session.remove()
        db.engine.dispose()


def uid(number: int) -> uuid.UUID:
    return uuid.UUID(int=number)


def customer(external_id):
    db.session.expire_all()
    return db.session.scalar(select(Customer).where(Customer.external_id == str(external_id)))


def members(slug: str) -> list[str]:
    db.session.expire_all()
    return sorted(c.external_id for c in engage.members(slug))


def rows(model, **where) -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(model).filter_by(**where)) or 0


def emails_of(app, broadcast) -> list[str]:
    with app.extensions["mail"].record_messages() as sent:
        engage.send_broadcast(broadcast)
    return sorted(address for message in sent for address in message.recipients)


def accounts(*numbers: int, tier: Tier = Tier.FREE) -> None:
    db.session.add_all(Account(id=uid(n), email=f"user{n}@example.com", tier=tier) for n in numbers)
    db.session.commit()


def two_pro_accounts_with_history(app, external_id: str):
    """Accounts 1 and 2, pro; account 1 gets everything forget must erase: events,
    memberships, an unsubscription, a push subscription, a sent message, a waiting run."""
    pros = engage.create_segment("Pro", PRO)
    engage.create_automation(
        "Nudge",
        trigger={"joins": pros},
        steps=[{"wait": {"days": 2}}, {"send": {"channel": "email", "subject": "S", "body": "B"}}],
    )
    accounts(1, 2, tier=Tier.PRO)
    news = engage.create_broadcast(
        "News", channel="email", segments=["all"], subject="Hi {{ customer.email }}", body="News"
    )
    assert emails_of(app, news) == ["user1@example.com", "user2@example.com"]
    found = customer(external_id)
    db.session.add(
        PushSubscription(
            customer_id=found.id, endpoint="https://push.example/1", p256dh="k", auth="a"
        )
    )
    db.session.commit()
    engage.unsubscribe(external_id, "push")
    return news


# -- deletes --------------------------------------------------------------------------------


def test_deleting_a_host_row_forgets_its_customer_by_default(app, client):
    news = two_pro_accounts_with_history(app, str(uid(1)))
    db.session.add(Payment(id=1, account_id=uid(1), amount=Decimal("5")))
    db.session.commit()
    assert rows(AutomationRun) == 2
    db.session.delete(db.session.get(Payment, 1))
    db.session.delete(db.session.get(Account, uid(1)))
    db.session.commit()

    assert engage.get_customer(uid(1)) is None
    left = {
        "events": rows(Event),
        "memberships": rows(Membership),
        "runs": rows(AutomationRun),
        "push": rows(PushSubscription),
        "unsubscriptions": rows(Unsubscription),
    }
    kept = customer(uid(2)).id
    assert left == {"events": 1, "memberships": 2, "runs": 1, "push": 0, "unsubscriptions": 0}
    assert db.session.scalar(select(Event.customer_id)) == kept
    # the sent message stays for the broadcast's counts, without id, email or content
    assert engage.broadcast_counts(news)["sent"] == 2
    anonymous = db.session.scalars(select(Message).where(Message.customer_id.is_(None))).all()
    assert [(m.status, m.subject, m.body) for m in anonymous] == [("sent", None, None)]
    page = client.get(f"/engage/admin/broadcasts/{news.id}")
    assert page.status_code == 200 and "forgotten" in page.text
    counts = dict(db.session.execute(select(Segment.slug, Segment.member_count)).all())
    assert counts == {"all": 1, "pro": 1}
    later = engage.create_broadcast(
        "Later", channel="email", segments=["all"], subject="S", body="B"
    )
    assert emails_of(app, later) == ["user2@example.com"]


def test_keep_takes_the_customer_out_of_every_segment_and_send_until_identified(app):
    active = engage.create_segment("Active", {"attribute": "status", "op": "eq", "value": "active"})
    automation = engage.create_automation(
        "Welcome",
        trigger={"joins": active},
        steps=[{"wait": {"days": 1}}, {"send": {"channel": "email", "subject": "S", "body": "B"}}],
    )
    db.session.add_all(
        [Partner(code="9", email="nine@example.com"), Partner(code="8", email="eight@example.com")]
    )
    db.session.commit()
    db.session.delete(db.session.get(Partner, "9"))
    db.session.commit()

    kept = customer("partner:9")
    assert kept.deleted_at is not None and kept.email == "nine@example.com"  # history stays
    assert members("all") == members("active") == ["partner:8"]
    assert engage.count({"all": []}) == 1
    today = engage.segment_history("active", days=1)[-1]
    assert (today.members, today.total, today.percent) == (1, 1, 100.0)  # of those evaluated
    engage.recompute()  # a full recompute does not bring them back
    assert members("all") == ["partner:8"]
    with app.extensions["mail"].record_messages() as sent:
        engage.run_due(utcnow() + timedelta(days=2))
    assert [m.recipients for m in sent] == [["eight@example.com"]]  # the run was cancelled
    assert engage.automation_stats(automation)["runs"]["cancelled"] == 1
    news = engage.create_broadcast("News", channel="email", segments=["all"], subject="S", body="B")
    assert emails_of(app, news) == ["eight@example.com"]

    engage.identify("partner:9", status="active")  # a later identify brings them back
    db.session.commit()
    assert customer("partner:9").deleted_at is None
    assert members("all") == ["partner:8", "partner:9"]


def test_deleting_an_activity_row_changes_nothing(app):
    accounts(1)
    db.session.add(Payment(id=1, account_id=uid(1), amount=Decimal("5")))
    db.session.commit()
    db.session.delete(db.session.get(Payment, 1))
    db.session.commit()
    assert customer(uid(1)).deleted_at is None
    assert members("all") == [str(uid(1))]
    assert rows(Event) == 2  # Opened account, Paid


def test_a_rolled_back_delete_forgets_nothing(app):
    accounts(1)
    db.session.delete(db.session.get(Account, uid(1)))
    db.session.flush()
    assert customer(uid(1)) is None
    db.session.rollback()
    assert customer(uid(1)) is not None
    assert members("all") == [str(uid(1))]


# -- erasure: Python, CLI, HTTP -----------------------------------------------------------


def test_forget_erases_in_the_hosts_transaction(app):
    engage.identify("api-only", email="api@example.com", plan="pro")
    engage.track("api-only", "Visited")
    db.session.commit()
    assert engage.forget_preview("api-only") == {
        "customers": 1,
        "events": 1,
        "memberships": 1,
        "subscriptions": 0,
        "runs": 0,
        "push_subscriptions": 0,
        "messages": 0,
    }
    erased = engage.forget("api-only")
    assert erased["customers"] == 1 and erased["events"] == 1
    db.session.rollback()  # not committed: nothing is lost
    assert customer("api-only") is not None
    engage.forget("api-only")
    db.session.commit()
    assert customer("api-only") is None and rows(Event) == 0
    assert engage.forget_preview("api-only") is None
    assert engage.forget("api-only")["customers"] == 0  # again: nothing to do


def test_flask_engage_forget_asks_first(app):
    accounts(1)
    runner = app.test_cli_runner()
    answer = runner.invoke(args=["engage", "forget", str(uid(1))], input="n\n")
    assert answer.exit_code == 1
    assert f"Erase customer '{uid(1)}' and 1 event(s), 1 segment membership(s)" in answer.output
    assert customer(uid(1)) is not None
    done = runner.invoke(args=["engage", "forget", str(uid(1)), "--yes"])
    assert done.exit_code == 0, done.output
    assert f"erased customer '{uid(1)}': 1 event(s)" in done.output
    assert customer(uid(1)) is None
    unknown = runner.invoke(args=["engage", "forget", "nobody", "--yes"])
    assert unknown.exit_code == 1
    assert "no customer 'nobody': nothing to erase" in unknown.output


def test_delete_v1_user_erases_it(app, client):
    assert (
        client.put(
            "/engage/v1/users/u1", auth=AUTH, json={"email": "u1@example.com", "tz": "Africa/Lagos"}
        ).status_code
        == 200
    )
    assert customer("u1").attributes["timezone"] == "Africa/Lagos"  # automations read it
    assert client.delete("/engage/v1/users/u1").status_code == 401
    response = client.delete("/engage/v1/users/u1", auth=AUTH)
    assert response.status_code == 200, response.json
    assert response.json["erased"]["customers"] == 1
    assert customer("u1") is None
    missing = client.delete("/engage/v1/users/u1", auth=AUTH)
    assert missing.status_code == 404 and missing.json["error"].startswith("id:")


# -- ORM bulk statements --------------------------------------------------------------------


def test_bulk_update_is_tracked_like_a_flush(app):
    accounts(1, 2, 3)
    engage.create_segment("Pro", PRO)
    result = db.session.execute(
        update(Account).where(Account.id.in_([uid(1), uid(2)])).values(tier=Tier.PRO)
    )
    assert result.rowcount == 2  # the host's result is untouched
    db.session.commit()
    assert members("pro") == sorted([str(uid(1)), str(uid(2))])
    assert customer(uid(1)).attributes["tier"] == "pro"
    changes = db.session.execute(
        select(Customer.external_id, Event.properties)
        .join(Customer)
        .where(Event.name == "Changed tier")
    ).all()
    assert sorted(changes) == sorted((str(uid(n)), {"from": "free", "to": "pro"}) for n in (1, 2))


def test_query_update_by_primary_key_and_other_sessions_are_tracked(app):
    accounts(1, 2, 3)
    engage.create_segment("Pro", PRO)
    db.session.query(Account).filter(Account.id == uid(1)).update({"tier": Tier.PRO})
    db.session.commit()
    db.session.execute(update(Account), [{"id": uid(2), "tier": Tier.PRO, "email": "new@x.io"}])
    db.session.commit()
    with Session(db.engine) as other:
        other.execute(update(Account).where(Account.id == uid(3)).values(tier=Tier.PRO))
        other.commit()
    assert members("pro") == sorted(str(uid(n)) for n in (1, 2, 3))
    assert customer(uid(2)).email == "new@x.io"


def test_a_bulk_update_of_many_rows_by_primary_key(app):
    numbers = range(1, 1201)  # more than SQLite takes in one IN list
    db.session.add_all(Account(id=uid(n)) for n in numbers)
    db.session.commit()
    engage.create_segment("Pro", PRO)
    db.session.execute(update(Account), [{"id": uid(n), "tier": Tier.PRO} for n in numbers])
    db.session.commit()
    assert len(members("pro")) == 1200
    assert rows(Event, name="Changed tier") == 1200


def test_a_rolled_back_bulk_update_leaves_nothing(app):
    accounts(1)
    db.session.execute(update(Account).values(tier=Tier.PRO))
    db.session.rollback()
    assert customer(uid(1)).attributes["tier"] == "free"
    assert rows(Event, name="Changed tier") == 0


def test_a_bulk_update_with_the_hosts_own_returning(app):
    accounts(1, 2)
    result = db.session.execute(
        update(Account).where(Account.id == uid(2)).values(tier=Tier.PRO).returning(Account.id)
    )
    assert result.scalars().all() == [uid(2)]
    db.session.commit()
    assert customer(uid(2)).attributes["tier"] == "pro"


def test_bulk_delete_forgets_or_keeps_like_a_flush(app):
    accounts(1, 2)
    db.session.add_all([Partner(code="p1", email="p1@example.com"), Partner(code="p2")])
    db.session.commit()
    db.session.execute(delete(Account).where(Account.id == uid(1)))
    db.session.query(Partner).filter(Partner.code == "p1").delete()
    db.session.commit()
    assert customer(uid(1)) is None  # Account: forget
    assert customer("partner:p1").deleted_at is not None  # Partner: keep
    assert members("all") == sorted([str(uid(2)), "partner:p2"])
