"""The notifier thread: a host's commit hands its drain request to a thread of the
process, so the request never waits for Redis, and the outbox stays the source of
truth when that thread cannot reach Redis (skipped without ``ENGAGE_TEST_REDIS_URL``)."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest
from sqlalchemy import func, select

from flask_engage import jobs
from flask_engage.models import OutboxItem
from tests.conftest import REDIS_URL
from tests.hostapp import User, db, engage

pytestmark = [
    pytest.mark.skipif(not REDIS_URL, reason="ENGAGE_TEST_REDIS_URL is not set"),
    pytest.mark.redis,
]

PRO = {"attribute": "plan", "op": "eq", "value": "pro"}


@pytest.fixture
def app_config(queue_name):
    return {"ENGAGE_REDIS_URL": REDIS_URL, "ENGAGE_QUEUE": queue_name}


def queued() -> list[str]:
    return [job.func_name.rsplit(".", 1)[-1] for job in jobs.get_queue().jobs]


def waiting() -> int:
    return db.session.scalar(select(func.count()).select_from(OutboxItem)) or 0


def members(segment) -> list[str]:
    return sorted(c.external_id for c in engage.members(segment))


def test_a_tracked_commit_does_not_wait_for_redis(app, session, monkeypatch):
    pro = engage.create_segment("Pro", PRO)
    engage.work(burst=True)
    gate = threading.Event()
    request_drain = jobs.dispatch.request_drain

    def slow_redis(job):
        gate.wait(3)  # Redis answers only once the test says so
        return request_drain(job)

    monkeypatch.setattr(jobs.dispatch, "request_drain", slow_redis)
    started = time.perf_counter()
    session.add(User(email="ada@example.com", plan="pro"))
    session.commit()
    assert time.perf_counter() - started < 1  # the commit did not wait for Redis
    assert queued() == [] and waiting() == 1  # the row is committed, the job not yet queued
    gate.set()
    assert jobs.dispatch.wait_for_notifications()
    assert queued() == ["job_drain_outbox"]
    engage.work(burst=True)
    assert members(pro) == ["1"]
    assert waiting() == 0


def test_notifier_survives_redis_down_and_a_failure_and_nothing_is_lost(
    app, session, monkeypatch, caplog
):
    pro = engage.create_segment("Pro", PRO)
    engage.work(burst=True)
    real_url = app.config["ENGAGE_REDIS_URL"]
    # Redis unreachable (a fresh URL: no breaker state), then an unexpected error
    app.config["ENGAGE_REDIS_URL"] = f"redis://u{uuid.uuid4().hex[:8]}@127.0.0.1:1/0"
    with caplog.at_level(logging.WARNING, logger="flask_engage"):
        session.add(User(email="ada@example.com", plan="pro"))
        session.commit()
        assert jobs.dispatch.wait_for_notifications()
        app.config["ENGAGE_REDIS_URL"] = real_url
        monkeypatch.setattr(jobs.dispatch, "request_drain", lambda job: 1 / 0)
        session.add(User(email="bola@example.com", plan="pro"))
        session.commit()
        assert jobs.dispatch.wait_for_notifications()
    messages = [record.getMessage() for record in caplog.records]
    assert any("could not reach Redis" in message for message in messages)
    assert any("could not request a drain job" in message for message in messages)
    assert queued() == [] and waiting() == 2  # both rows wait in the outbox

    monkeypatch.undo()
    session.add(User(email="chidi@example.com", plan="free"))
    session.commit()  # the same thread serves the next commit
    assert jobs.dispatch.wait_for_notifications()
    assert queued() == ["job_drain_outbox"]
    engage.work(burst=True)
    assert members(pro) == ["1", "2"]  # the rows left while Redis failed are done too
    assert waiting() == 0
    assert len(jobs.get_queue()) == 0


def test_many_commits_while_redis_is_slow_queue_one_drain(app, session, monkeypatch):
    pro = engage.create_segment("Pro", PRO)
    engage.work(burst=True)
    calls: list[float] = []
    request_drain = jobs.dispatch.request_drain

    def slow_redis(job):
        calls.append(time.perf_counter())
        time.sleep(0.2)
        return request_drain(job)

    monkeypatch.setattr(jobs.dispatch, "request_drain", slow_redis)
    for i in range(20):
        session.add(User(email=f"u{i}@example.com", plan="pro"))
        session.commit()
    assert jobs.dispatch.wait_for_notifications()
    assert 1 <= len(calls) < 20  # requests made while one was on its way share the next
    assert queued() == ["job_drain_outbox"]
    engage.work(burst=True)
    assert len(members(pro)) == 20
