"""Event retention: ENGAGE_EVENT_RETENTION_DAYS prunes old events in bounded batches,
and segments that read further back than the events kept are reported."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select

from flask_engage.errors import ConfigurationError
from flask_engage.jobs.retention import prune_events
from flask_engage.models import Customer, Event, utcnow
from tests.hostapp import db, engage


@pytest.fixture
def app_config() -> dict:
    return {"ENGAGE_EVENT_RETENTION_DAYS": 30, "ENGAGE_EVENT_RETENTION_BATCH": 3}


def events() -> int:
    return db.session.scalar(select(func.count()).select_from(Event)) or 0


def add_events(session, now) -> None:
    for day in range(10):  # ten old events: 40 to 49 days ago
        engage.track("old", "Login", timestamp=now - timedelta(days=40 + day))
    for day in range(5):  # five recent ones
        engage.track("new", "Login", timestamp=now - timedelta(days=day))
    session.commit()


def test_old_events_are_deleted_in_bounded_batches(app, session):
    now = utcnow()
    add_events(session, now)
    # two batches of three per call: a tick never deletes more than it is allowed
    assert prune_events(now, max_batches=2) == 6
    assert events() == 15 - 6
    assert prune_events(now, max_batches=2) == 4
    assert prune_events(now, max_batches=2) == 0
    owners = select(Customer.external_id).join(Event, Event.customer_id == Customer.id)
    kept = db.session.scalars(owners).all()
    assert kept == ["new"] * 5


def test_the_schedule_prunes_and_reports_it(app, session):
    now = utcnow()
    add_events(session, now)
    report = engage.run_due(now)
    assert report["events_pruned"] == 10
    assert events() == 5


@pytest.mark.parametrize("app_config", [{}])
def test_without_retention_events_are_kept(app, session):
    now = utcnow()
    add_events(session, now)
    assert engage.run_due(now + timedelta(days=3650))["events_pruned"] == 0
    assert events() == 15
    assert "retention_warnings" in engage.status()
    assert engage.status()["retention_warnings"] == {}


def test_segments_reading_past_retention_are_reported(app, session, caplog):
    engage.create_segment("Weekly", {"event": "Login", "window": {"last_days": 7}})
    with caplog.at_level(logging.WARNING, logger="flask_engage"):
        engage.create_segment("Quarterly", {"event": "Login", "window": {"last_days": 90}})
        engage.create_segment("Ever bought", {"event": "Purchase"})
    assert "'Quarterly' reads events since" in caplog.text
    assert "'Ever bought' reads all events" in caplog.text
    # a segment built on one that reads too far back reads too far back too
    engage.create_segment("Pro quarterly", {"all": [{"segment": "quarterly", "op": "in"}]})
    engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})

    warnings = engage.status()["retention_warnings"]
    assert sorted(warnings) == ["ever-bought", "pro-quarterly", "quarterly"]
    assert "older than 30 days are deleted" in warnings["quarterly"]

    lines = app.test_cli_runner().invoke(args=["engage", "status"]).output
    assert "past retention: ever-bought: reads all events" in lines


def test_an_edit_that_reaches_back_is_logged(app, session, caplog):
    segment = engage.create_segment("Active", {"event": "Login", "window": {"last_days": 7}})
    with caplog.at_level(logging.WARNING, logger="flask_engage"):
        since_2020 = {"event": "Login", "window": {"since": "2020-01-01"}}
        engage.update_segment(segment, filters=since_2020)
    assert "'Active' reads events since 2020-01-01" in caplog.text


def test_pruned_events_no_longer_count(app, session):
    now = utcnow()
    add_events(session, now)
    engage.create_segment("Logged in", {"event": "Login"})
    assert sorted(c.external_id for c in engage.members("logged-in")) == ["new", "old"]
    prune_events(now)
    engage.recompute("logged-in")
    assert [c.external_id for c in engage.members("logged-in")] == ["new"]


@pytest.mark.parametrize("value", [0, -3, "soon", 1.5])
def test_bad_retention_is_refused_at_start_up(value):
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", ENGAGE_EVENT_RETENTION_DAYS=value)
    db.init_app(app)
    with pytest.raises(ConfigurationError, match="ENGAGE_EVENT_RETENTION_DAYS"):
        engage.init_app(app, db=db)


def test_retention_from_the_environment_is_a_number():
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", ENGAGE_EVENT_RETENTION_DAYS="90")
    db.init_app(app)
    engage.init_app(app, db=db)
    assert app.config["ENGAGE_EVENT_RETENTION_DAYS"] == 90
