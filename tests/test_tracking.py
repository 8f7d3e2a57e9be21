"""Data in: track_model hooks, identify/track, in the host's transaction."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from flask_engage.errors import ValidationError
from flask_engage.models import AttributeDefinition, Customer, Event, OutboxItem
from tests.hostapp import Order, User, db, engage


def events_of(external_id):
    return db.session.scalars(
        select(Event).join(Customer).where(Customer.external_id == external_id).order_by(Event.id)
    ).all()


def test_tracked_user_insert_creates_customer_and_signed_up_event(app):
    db.session.add(User(id=7, email="ada@example.com", plan="free", city="Lagos"))
    db.session.commit()
    customer = db.session.scalar(select(Customer).where(Customer.external_id == "7"))
    assert customer.email == "ada@example.com"
    assert customer.attributes == {"plan": "free", "city": "Lagos"}
    assert [e.name for e in events_of("7")] == ["Signed up"]
    assert customer.created_at.tzinfo is not None


def test_plan_change_updates_attribute_and_records_changed_plan(app):
    db.session.add(User(id=1, email="a@example.com", plan="free"))
    db.session.commit()
    user = db.session.get(User, 1)  # expired after commit: the old value must still be seen
    user.plan = "pro"
    db.session.commit()
    customer = db.session.scalar(select(Customer).where(Customer.external_id == "1"))
    db.session.refresh(customer)
    assert customer.attributes["plan"] == "pro"
    changed = [e for e in events_of("1") if e.name == "Changed plan"]
    assert len(changed) == 1
    assert changed[0].properties == {"from": "free", "to": "pro"}


def test_update_of_untracked_column_writes_nothing(app):
    db.session.add(User(id=1, email="a@example.com", plan="free"))
    db.session.commit()
    before = db.session.scalar(select(Customer.updated_at).where(Customer.external_id == "1"))
    user = db.session.get(User, 1)
    user.plan = "free"  # same value
    db.session.commit()
    assert len(events_of("1")) == 1
    assert (
        db.session.scalar(select(Customer.updated_at).where(Customer.external_id == "1")) == before
    )


def test_host_row_of_a_known_customer_updates_it_without_a_duplicate(app):
    """A new User row inserts its customer without looking first; when the customer
    exists already (identified before the row was created), it is updated instead."""
    created = datetime(2020, 1, 1, tzinfo=UTC)
    engage.identify(9, email="old@example.com", vip=True, created_at=created)
    db.session.commit()
    db.session.add(User(id=9, email="ada@example.com", plan="pro"))
    db.session.commit()
    rows = db.session.scalars(select(Customer).where(Customer.external_id == "9")).all()
    assert len(rows) == 1
    db.session.refresh(rows[0])
    assert rows[0].email == "ada@example.com"
    assert rows[0].attributes == {"vip": True, "plan": "pro"}  # no city: nothing stored
    assert rows[0].created_at == created
    assert [e.name for e in events_of("9")] == ["Signed up"]


def test_tracked_rows_queue_their_customers_in_the_host_transaction(app):
    """Events and their ``evaluate`` outbox rows (one statement on PostgreSQL for a
    single event) are written in the host's transaction and go with its rollback."""
    db.session.add_all([User(id=1, email="a@example.com"), User(id=2, email="b@example.com")])
    db.session.commit()
    ids = {key: id_ for key, id_ in db.session.execute(select(Customer.external_id, Customer.id))}

    def queued() -> list[str]:
        return list(db.session.scalars(select(OutboxItem.key).order_by(OutboxItem.id)))

    assert queued() == []  # inline: done after the commit
    db.session.add(Order(user_id=1, amount=Decimal("5")))
    db.session.flush()
    assert queued() == [str(ids["1"])]
    db.session.add_all([Order(user_id=2, amount=Decimal("1")), Order(user_id=1, amount=1)])
    db.session.flush()
    assert sorted(queued()) == sorted([str(ids["1"]), str(ids["1"]), str(ids["2"])])
    db.session.rollback()
    assert queued() == []
    assert [e.name for e in events_of("1")] == ["Signed up"]
    db.session.add(Order(user_id=2, amount=Decimal("7")))
    db.session.commit()
    assert queued() == []
    assert [e.name for e in events_of("2")] == ["Signed up", "Purchase"]
    assert engage.count({"event": "Purchase", "count": {"op": "gte", "value": 1}}) == 1


def test_order_insert_records_purchase_with_amount(app):
    db.session.add(User(id=3, email="b@example.com"))
    db.session.flush()
    db.session.add(Order(id=1, user_id=3, amount=Decimal("12.50")))
    db.session.commit()
    purchase = [e for e in events_of("3") if e.name == "Purchase"]
    assert purchase and purchase[0].properties == {"amount": 12.5}


def test_rollback_leaves_no_trace(app):
    db.session.add(User(id=9, email="c@example.com"))
    db.session.flush()
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 1
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 0
    assert db.session.scalar(select(func.count()).select_from(Event)) == 0


def test_deleted_event(app):
    db.session.add(User(id=4, email="d@example.com"))
    db.session.commit()
    db.session.delete(db.session.get(User, 4))
    db.session.commit()
    assert [e.name for e in events_of("4")] == ["Signed up", "Deleted account"]


def test_identify_merges_attributes_and_none_removes(app):
    engage.identify(5, email="e@example.com", plan="pro", city="Accra")
    engage.identify("5", attributes={"city": None, "age": 31})
    db.session.commit()
    customer = db.session.scalar(select(Customer).where(Customer.external_id == "5"))
    assert customer.attributes == {"plan": "pro", "age": 31}
    types = dict(
        db.session.execute(
            select(AttributeDefinition.name, AttributeDefinition.type).where(
                AttributeDefinition.kind == "attribute"
            )
        ).all()
    )
    assert types == {"plan": "string", "city": "string", "age": "number"}


def test_track_creates_unknown_customer_and_keeps_timestamp(app):
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    event = engage.track("new", "Logged in", {"device": "ios"}, timestamp=when)
    db.session.commit()
    assert event.occurred_at == when
    assert event.customer.external_id == "new"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: engage.identify("", plan="x"), "id: customer id must not be empty"),
        (lambda: engage.identify(1, email="nope"), "email:"),
        (lambda: engage.identify(1, attributes={"": 1}), "name must not be empty"),
        (lambda: engage.identify(1, attributes={"x" * 200: 1}), "longer than"),
        (lambda: engage.track(1, "E", {"a": object()}), "properties.a: unsupported value"),
        (lambda: engage.track(1, "E", timestamp="yesterday"), "timestamp"),
        (lambda: engage.track(1, "E", timestamp=12), "timestamp: expected an ISO 8601"),
    ],
)
def test_bad_python_input_raises_and_writes_nothing(app, call, message):
    with pytest.raises(ValidationError, match=message):
        call()
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 0


def test_naive_datetimes_are_taken_as_utc(app):
    event = engage.track("n", "Logged in", timestamp=datetime(2026, 1, 2, 3, 4))
    db.session.commit()
    assert event.occurred_at == datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    window = {"event": "Logged in", "window": {"last_days": 1}}
    assert engage.count(window, now=datetime(2026, 1, 2, 12, 0)) == 1
    assert engage.count(window, now=datetime(2026, 1, 4, 12, 0)) == 0


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ENGAGE_TIMEZONE", "Mars/Olympus"),
        ("ENGAGE_TIMEZONE", "America"),
        ("ENGAGE_BATCH_SIZE", 0),
        ("ENGAGE_SCHEDULE_INTERVAL", "sixty"),
        ("ENGAGE_API_KEYS", ""),
        ("ENGAGE_API_KEYS", ["good", "  "]),
        ("ENGAGE_API_KEYS", ["key:"]),
        ("ENGAGE_API_KEYS", [":secret"]),
    ],
)
def test_bad_configuration_is_refused_at_init(tmp_path, key, value):
    from flask_engage.errors import ConfigurationError
    from tests.hostapp import create_app

    with pytest.raises(ConfigurationError, match=key):
        create_app(f"sqlite:///{tmp_path / 'x.db'}", **{key: value})


def test_numeric_settings_accept_numeric_strings(tmp_path):
    """Settings read from environment variables arrive as strings."""
    from tests.hostapp import create_app

    app = create_app(f"sqlite:///{tmp_path / 'x.db'}", ENGAGE_BATCH_SIZE=" 250 ")
    assert app.config["ENGAGE_BATCH_SIZE"] == 250


def test_unknown_engage_settings_are_named_with_a_suggestion(tmp_path, caplog, monkeypatch):
    import logging

    from tests.hostapp import create_app

    # Alembic's fileConfig (run by another test's Flask-Migrate) disables existing loggers
    monkeypatch.setattr(logging.getLogger("flask_engage"), "disabled", False)
    with caplog.at_level("WARNING", logger="flask_engage"):
        create_app(f"sqlite:///{tmp_path / 'x.db'}", ENGAGE_BATCH_SIZ=10)
    assert "ENGAGE_BATCH_SIZ (did you mean ENGAGE_BATCH_SIZE?)" in caplog.text
