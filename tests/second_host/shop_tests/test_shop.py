"""The shop's own suite: what a host developer checks after adding flask-engage."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from shop import Order, Plan, Shopper, create_app, db, engage
from sqlalchemy import select, update

import flask_engage
from flask_engage import signals
from flask_engage.models import Event
from flask_engage.testing import TEST_SETTINGS, recorded

PLUS = {"attribute": "plan", "op": "eq", "value": "plus"}


def sign_up(client, email, country="NG") -> uuid.UUID:
    response = client.post("/shoppers", json={"email": email, "country": country})
    assert response.status_code == 201
    return uuid.UUID(response.json["id"])


def test_engage_is_the_installed_package_not_a_checkout():
    installed = Path(flask_engage.__file__).resolve()
    assert "site-packages" in installed.parts
    source = os.environ.get("ENGAGE_SOURCE")  # the package directory of the checkout
    if source:
        assert not installed.is_relative_to(Path(source).resolve())


def test_the_factory_builds_any_number_of_apps_with_the_module_level_admin(database_url):
    for _ in range(3):
        app = create_app(
            {
                **TEST_SETTINGS,
                "SQLALCHEMY_DATABASE_URI": database_url,
                "ENGAGE_ADMIN_ACCESS": lambda: True,
            }
        )
        with app.app_context():
            db.create_all()
            engage.create_all()
            client = app.test_client()
            assert client.get("/admin/shoppers/").status_code == 200
            assert client.get("/admin/engage/customers/").status_code == 200
            db.session.remove()
            engage.drop_all()
            db.drop_all()
            db.engine.dispose()


def test_migrations_of_the_shop_and_of_engage_live_side_by_side(database_url):
    app = create_app({**TEST_SETTINGS, "SQLALCHEMY_DATABASE_URI": database_url})
    runner = app.test_cli_runner()
    with app.app_context():
        upgraded = runner.invoke(args=["db", "upgrade"])  # the shop's own (Flask-Migrate)
        assert upgraded.exit_code == 0, upgraded.output
        result = runner.invoke(args=["engage", "db", "upgrade"])
        assert result.exit_code == 0, result.output
        # the shop's autogenerate sees its models in sync and proposes nothing for engage_*
        check = runner.invoke(args=["db", "check"])
        assert check.exit_code == 0, check.output
        shopper = Shopper(email="mig@example.com")
        db.session.add(shopper)
        db.session.commit()
        assert engage.get_customer(shopper.id).email == "mig@example.com"
        db.session.remove()
        db.engine.dispose()


def test_a_uuid_keyed_shopper_becomes_a_customer(client):
    with recorded(signals.customer_identified) as identified:
        shopper_id = sign_up(client, "ada@example.com")
    found = engage.get_customer(shopper_id)
    assert found.external_id == str(shopper_id)
    assert found.attributes == {"plan": "free", "country": "NG"}  # the Enum's value
    assert [call["customer"].email for call in identified] == ["ada@example.com"]


def test_a_bad_email_never_breaks_sign_up(client):
    shopper_id = sign_up(client, "not an email")
    assert engage.get_customer(shopper_id).email is None


def test_a_bulk_upgrade_reaches_segments_and_broadcasts(app, client, outbox):
    plus = engage.create_segment("Plus", PLUS)
    lagos = sign_up(client, "lagos@example.com", "NG")
    sign_up(client, "accra@example.com", "GH")
    assert client.post("/countries/NG/upgrade").json == {"upgraded": 1}
    assert [c.external_id for c in engage.members(plus)] == [str(lagos)]
    changed = db.session.scalars(select(Event.properties).where(Event.name == "Changed plan"))
    assert changed.all() == [{"from": "free", "to": "plus"}]
    db.session.query(Shopper).filter(Shopper.country == "GH").update({"plan": Plan.PLUS})
    db.session.commit()
    assert len(list(engage.members(plus))) == 2
    news = engage.create_broadcast(
        "Plus news", channel="email", segments=[plus], subject="News", body="<p>For Plus</p>"
    )
    engage.send_broadcast(news)
    assert sorted(m.recipients[0] for m in outbox) == ["accra@example.com", "lagos@example.com"]


def test_a_closed_account_is_forgotten_and_gets_no_more_email(app, client, outbox):
    gone = sign_up(client, "gone@example.com")
    stays = sign_up(client, "stays@example.com")
    db.session.add(Order(shopper_id=gone, total=12))
    db.session.commit()
    assert client.delete(f"/shoppers/{gone}").status_code == 204  # a bulk delete
    assert engage.get_customer(gone) is None
    db.session.execute(update(Shopper).where(Shopper.id == stays).values(country="GH"))
    db.session.commit()
    news = engage.create_broadcast(
        "News", channel="email", segments=["all"], subject="News", body="<p>Hello</p>"
    )
    engage.send_broadcast(news)
    assert [m.recipients for m in outbox] == [["stays@example.com"]]
    assert engage.get_customer(stays).attributes["country"] == "GH"
