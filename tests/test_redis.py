"""Redis mode against a real Redis and an in-process RQ worker (skipped without
``ENGAGE_TEST_REDIS_URL``). Each test gets its own queue, deleted afterwards."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from flask_engage import jobs
from flask_engage.models import Message
from tests.conftest import REDIS_URL
from tests.hostapp import User, db, engage

needs_redis = pytest.mark.skipif(not REDIS_URL, reason="ENGAGE_TEST_REDIS_URL is not set")
pytestmark = [needs_redis, pytest.mark.redis]

PRO = {"attribute": "plan", "op": "eq", "value": "pro"}


@pytest.fixture
def app_config(queue_name):
    return {"ENGAGE_REDIS_URL": REDIS_URL, "ENGAGE_QUEUE": queue_name}


def queued_functions() -> list[str]:
    return [job.func_name.rsplit(".", 1)[-1] for job in jobs.get_queue().jobs]


def member_ids(segment) -> list[str]:
    return sorted(c.external_id for c in engage.members(segment))


def test_create_segment_is_computed_by_the_worker(app, session):
    session.add_all([User(email=f"u{i}@example.com", plan="pro") for i in range(3)])
    session.commit()
    engage.work(burst=True)
    pro = engage.create_segment("Pro", PRO)
    assert "job_recompute" in queued_functions()
    assert member_ids(pro) == []
    engage.work(burst=True)
    assert len(member_ids(pro)) == 3
    assert len(jobs.get_queue()) == 0


def test_send_broadcast_is_sent_by_the_worker(app, session):
    session.add_all([User(email=f"u{i}@example.com", plan="pro") for i in range(3)])
    session.commit()
    pro = engage.create_segment("Pro", PRO)
    engage.work(burst=True)
    broadcast = engage.create_broadcast(
        "Hi", channel="email", segments=[pro], subject="Hello", body="Hi {{ customer.email }}"
    )
    with app.extensions["mail"].record_messages() as outbox:
        engage.send_broadcast(broadcast)
        assert outbox == []
        assert "job_drain_outbox" in queued_functions()
        engage.work(burst=True)
    assert sorted(m.recipients[0] for m in outbox) == [f"u{i}@example.com" for i in range(3)]
    sent = db.session.scalar(select(func.count()).where(Message.status == "sent"))
    assert sent == 3


def test_failed_job_retries_with_backoff_then_lands_in_failed_registry(app, session):
    from rq.job import Job

    queue = jobs.get_queue()
    # a job that cannot run (a poisoned outbox row no longer fails a job: it is parked)
    assert jobs.enqueue(jobs.job_deliver_batch, "unexpected", job_id="drain-poisoned")
    engage.work(burst=True)
    job = Job.fetch("drain-poisoned", connection=queue.connection)
    assert job.get_status() == "scheduled"
    assert job.retries_left == len(jobs.JOB_RETRY_INTERVALS) - 1
    due = queue.scheduled_job_registry.get_scheduled_time(job)
    assert 5 < (due - datetime.now(UTC)).total_seconds() <= jobs.JOB_RETRY_INTERVALS[0]
    for _ in range(len(jobs.JOB_RETRY_INTERVALS)):  # make each retry due now
        queue.scheduled_job_registry.schedule(job, datetime.now(UTC))
        engage.work(burst=True)
    assert "drain-poisoned" in queue.failed_job_registry.get_job_ids()
    failed = Job.fetch("drain-poisoned", connection=queue.connection)
    assert "TypeError" in failed.latest_result().exc_string
    runner = app.test_cli_runner()
    result = runner.invoke(args=["engage", "status"])
    assert result.exit_code == 0, result.output
    failed_line = next(line for line in result.output.splitlines() if "failed jobs" in line)
    assert int(failed_line.split(":")[-1]) >= 1


def test_one_tick_per_interval_across_processes(app, monkeypatch):
    """The schedule lease: a second process asking within the interval does nothing."""
    from flask_engage.jobs import schedule

    assert jobs.tick() is not None
    assert jobs.last_tick() is not None
    monkeypatch.setattr(schedule, "HOLDER", "another-host:1:abc")
    assert jobs.tick() is None  # the first process holds the lease for this interval
    app.config["ENGAGE_SCHEDULE_INTERVAL"] = 1
    time.sleep(1.1)
    assert jobs.tick() is not None  # the lease ran out: the other process ticks


def test_worker_command_burst_in_redis_mode(app, session):
    pro = engage.create_segment("Pro", PRO)
    session.add(User(email="a@example.com", plan="pro"))
    session.commit()
    result = app.test_cli_runner().invoke(args=["engage", "worker", "--burst"])
    assert result.exit_code == 0, result.output
    assert len(member_ids(pro)) == 1
    assert len(jobs.get_queue()) == 0
    status = app.test_cli_runner().invoke(args=["engage", "status"]).output
    assert f"{app.config['ENGAGE_QUEUE']}: 0 job(s)" in status
    assert "outbox backlog: 0" in status
