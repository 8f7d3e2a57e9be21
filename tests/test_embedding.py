"""Engage inside a host app never breaks, surprises or leaks it: odd column types and
keys, two identity models, savepoints, signals after commit, track_view, start-up
checks, app factories with a host Admin."""

from __future__ import annotations

import logging
import uuid
from datetime import date
from decimal import Decimal

import pytest
from flask_admin import Admin
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from flask_engage import Engage, signals
from flask_engage.errors import ConfigurationError, ValidationError
from flask_engage.models import Customer, Event
from tests import embedapp
from tests.conftest import database_url
from tests.embedapp import Account, Partner, Payment, Team, Tier, db, engage


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


@pytest.fixture
def warnings_seen(caplog, monkeypatch):
    # Alembic's fileConfig (run by another test's Flask-Migrate) disables existing loggers
    monkeypatch.setattr(logging.getLogger("flask_engage"), "disabled", False)
    caplog.set_level("WARNING", logger="flask_engage")
    return caplog


def customer(external_id):
    db.session.expire_all()
    return db.session.scalar(select(Customer).where(Customer.external_id == str(external_id)))


def event_names(external_id):
    return db.session.scalars(
        select(Event.name)
        .join(Customer)
        .where(Customer.external_id == str(external_id))
        .order_by(Event.id)
    ).all()


def committed_count(app, model) -> int:
    """Rows of ``model`` visible from a connection of its own (committed rows only)."""
    engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    try:
        with engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(model)) or 0
    finally:
        engine.dispose()


# -- automatic tracking converts or drops what it cannot store --------------------------


def test_tracked_values_of_any_column_type_are_converted(app):
    account = Account(
        email="ada@example.com",
        tier=Tier.PRO,
        prefs={"lang": "fr", "digest": True},
        tags=["beta", "vip"],
        balance=Decimal("12.50"),
        born=date(1990, 5, 1),
    )
    db.session.add(account)
    db.session.commit()  # the host's commit goes through
    stored = customer(account.id)  # a UUID primary key with the default customer_id="id"
    assert stored.external_id == str(account.id)
    assert stored.email == "ada@example.com"
    assert stored.attributes == {
        "tier": "pro",
        "prefs": '{"digest": true, "lang": "fr"}',
        "tags": ["beta", "vip"],
        "balance": 12.5,
        "born": "1990-05-01T00:00:00.000000Z",
    }
    assert engage.count({"attribute": "tier", "op": "eq", "value": "pro"}) == 1
    assert engage.count({"attribute": "balance", "op": "gt", "value": 10}) == 1

    account.tier = Tier.FREE
    db.session.add(Payment(id=1, account_id=account.id, amount=Decimal("3.10"), method=Tier.PRO))
    db.session.commit()
    assert customer(account.id).attributes["tier"] == "free"
    assert sorted(event_names(account.id)) == ["Changed tier", "Opened account", "Paid"]
    properties = dict(db.session.execute(select(Event.name, Event.properties)).all())
    assert properties["Changed tier"] == {"from": "pro", "to": "free"}
    assert properties["Paid"] == {"amount": 3.1, "method": "pro"}


@pytest.mark.parametrize("bad_email", ["", "Bob", "two@a.com, three@b.com"])
def test_a_bad_email_is_stored_as_no_email_with_a_warning(app, warnings_seen, bad_email):
    db.session.add(Account(id=uuid.UUID(int=1), email=bad_email))
    db.session.commit()
    assert committed_count(app, Account) == 1
    assert customer(uuid.UUID(int=1)).email is None
    if bad_email:
        assert "Account.email: not an email address; stored as no email" in warnings_seen.text


def test_an_email_changed_to_an_invalid_one_is_removed(app, warnings_seen):
    account = Account(email="ada@example.com")
    db.session.add(account)
    db.session.commit()
    account.email = "ada at example"
    db.session.commit()
    assert customer(account.id).email is None
    assert "Account.email" in warnings_seen.text


def test_a_value_that_cannot_be_stored_is_dropped_with_a_warning(app, warnings_seen):
    account = Account(email="b@example.com", avatar=b"\x89PNG", prefs={"lang": "en"})
    db.session.add(account)
    db.session.commit()
    stored = customer(account.id)
    assert "avatar" not in stored.attributes
    assert stored.attributes["prefs"] == '{"lang": "en"}'
    assert "Account.avatar: unsupported value of type bytes; not stored" in warnings_seen.text


def test_the_explicit_api_still_refuses_what_it_cannot_store(app):
    with pytest.raises(ValidationError, match="email:"):
        engage.identify("x", email="Bob")
    with pytest.raises(ValidationError, match="attributes.tier: unsupported value of type Tier"):
        engage.identify("x", tier=Tier.PRO)
    db.session.commit()
    assert engage.get_customer("x") is None


# -- keys and identity models ----------------------------------------------------------------


def test_string_keys_and_a_prefix_keep_two_identity_models_apart(app):
    account = Account(id=uuid.UUID(int=2), email="user@example.com")
    db.session.add_all([account, Partner(code="2", email="partner@example.com")])
    db.session.commit()
    assert customer(uuid.UUID(int=2)).email == "user@example.com"
    assert customer("partner:2").email == "partner@example.com"
    assert engage.get_customer("partner:2").attributes == {"status": "active"}


def test_a_string_primary_key_works_with_the_default_customer_id(app):
    db.session.add(Team(id="blue", name="Blue team"))
    db.session.commit()
    assert engage.get_customer("team:blue").attributes == {"name": "Blue team"}
    db.session.delete(db.session.get(Team, "blue"))  # its own key: forgotten with it
    db.session.commit()
    assert engage.get_customer("team:blue") is None


def test_a_second_identity_model_must_say_how_its_ids_relate(app):
    other = Engage()
    other.track_model(Account, email="email")
    with pytest.raises(ConfigurationError, match="Account and Partner both give customer ids"):
        other.track_model(Partner, customer_id="code", email="email")
    other.track_model(Partner, customer_id="code", email="email", customer_prefix="")  # same ids
    with pytest.raises(ValidationError, match="on_delete must be 'forget' or 'keep'"):
        other.track_model(Payment, customer_id="account_id", on_delete="erase")


def test_get_customer_reads_and_writes_nothing(app):
    assert engage.get_customer(uuid.UUID(int=5)) is None
    assert engage.get_customer("nobody") is None
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 0
    account = Account(id=uuid.UUID(int=5), email="c@example.com")
    db.session.add(account)
    db.session.commit()
    found = engage.get_customer(uuid.UUID(int=5))
    assert found.email == "c@example.com" and found.deleted_at is None
    with pytest.raises(ValidationError, match="id: customer id must not be empty"):
        engage.get_customer(" ")


def test_writes_through_another_session_are_tracked(app):
    pros = engage.create_segment("Pro", {"attribute": "tier", "op": "eq", "value": "pro"})
    with Session(db.engine) as other:
        other.add(Account(id=uuid.UUID(int=7), email="d@example.com", tier=Tier.PRO))
        other.commit()
    assert customer(uuid.UUID(int=7)).attributes["tier"] == "pro"
    assert [c.external_id for c in engage.members(pros)] == [str(uuid.UUID(int=7))]


# -- savepoints and signals after commit ---------------------------------------------------


def test_a_rolled_back_savepoint_keeps_the_outer_transactions_work(app):
    pros = engage.create_segment("Pro", {"attribute": "tier", "op": "eq", "value": "pro"})
    db.session.add(Account(id=uuid.UUID(int=1), email="kept@example.com", tier=Tier.PRO))
    db.session.flush()
    savepoint = db.session.begin_nested()
    db.session.add(Account(id=uuid.UUID(int=2), email="gone@example.com", tier=Tier.PRO))
    db.session.flush()
    savepoint.rollback()
    db.session.commit()
    # the outer work was kept and dispatched: the customer joined at commit
    assert [c.email for c in engage.members(pros)] == ["kept@example.com"]
    assert customer(uuid.UUID(int=2)) is None


def test_tracking_signals_fire_after_commit_and_never_for_rolled_back_work(app):
    seen = []

    def on_event(sender, event, customer):
        # the event is committed when receivers hear of it
        seen.append((event.name, committed_count(app, Event)))

    def on_customer(sender, customer):
        seen.append(("identified", customer.email))

    with (
        signals.event_tracked.connected_to(on_event),
        signals.customer_identified.connected_to(on_customer),
    ):
        engage.track("visitor", "Viewed pricing")
        db.session.rollback()
        assert seen == []  # rolled back: never announced

        engage.track("visitor", "Viewed pricing")
        db.session.flush()
        assert seen == []  # not yet committed
        db.session.commit()
        assert seen == [("Viewed pricing", 1)]

        seen.clear()
        db.session.add(Account(email="e@example.com"))  # track_model writes announce too
        db.session.flush()
        assert seen == []
        db.session.commit()
        assert sorted(seen, key=str) == [("Opened account", 2), ("identified", "e@example.com")]


# -- track_view -----------------------------------------------------------------------------


def test_track_view_neither_commits_nor_rolls_back_the_hosts_pending_changes(app, client):
    response = client.post("/login/acc-1")
    assert response.status_code == 200
    response = client.post("/draft")
    assert response.status_code == 200
    pending = [obj for obj in db.session.new if isinstance(obj, Partner)]
    assert [p.code for p in pending] == ["draft"]  # not rolled back
    assert committed_count(app, Partner) == 0  # not committed
    assert committed_count(app, Event) == 2  # the view's own events are
    assert event_names("acc-1") == ["Logged in", "Wrote a draft"]


def test_track_view_records_a_logout(app, client):
    client.post("/login/acc-2")
    assert client.post("/logout").status_code == 200
    assert event_names("acc-2") == ["Logged in", "Logged out"]
    assert client.post("/logout").status_code == 200  # nobody signed in: no event
    assert db.session.scalar(select(func.count()).select_from(Event)) == 2


# -- start-up checks ------------------------------------------------------------------------


def test_start_up_warns_when_emails_could_not_be_signed_or_linked(tmp_path, warnings_seen):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    embedapp.create_app(url, SECRET_KEY=None, ENGAGE_BASE_URL=None)
    assert "SECRET_KEY is not set: unsubscribe links cannot be signed" in warnings_seen.text
    assert "ENGAGE_BASE_URL: set it (or SERVER_NAME)" in warnings_seen.text
    warnings_seen.clear()
    embedapp.create_app(url, ENGAGE_BASE_URL=None, SERVER_NAME="app.example.com")
    assert warnings_seen.text == ""


# -- app factories with a host Admin --------------------------------------------------------


def test_a_module_level_host_admin_works_with_any_number_of_apps(tmp_path):
    host_admin = Admin(name="Host")  # as a host module would create it, at import time
    for number in range(3):
        app = embedapp.create_app(
            f"sqlite:///{tmp_path / f'{number}.db'}", host_admin, ENGAGE_ADMIN_ACCESS=lambda: True
        )
        with app.app_context():
            db.create_all()
            engage.create_all()
            client = app.test_client()
            assert client.get("/admin/engage/customers/").status_code == 200
            assert client.get("/admin/engage/segments/").status_code == 200
            db.engine.dispose()
