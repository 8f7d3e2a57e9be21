"""Background work: inline and Redis dispatch, the outbox with Redis down, concurrent
workers draining one backlog, and idempotent jobs."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest
from sqlalchemy import func, select

from flask_engage import jobs, signals
from flask_engage.models import Membership, MembershipChange, OutboxItem
from tests.conftest import REDIS_URL
from tests.hostapp import User, db, engage

PRO = {"attribute": "plan", "op": "eq", "value": "pro"}


@pytest.fixture(
    params=[
        "inline",
        pytest.param(
            "redis",
            marks=pytest.mark.skipif(not REDIS_URL, reason="ENGAGE_TEST_REDIS_URL is not set"),
        ),
    ]
)
def mode(request) -> str:
    return request.param


@pytest.fixture
def app_config(mode, queue_name):
    if mode == "redis":
        return {"ENGAGE_REDIS_URL": REDIS_URL, "ENGAGE_QUEUE": queue_name}
    return {}


def member_ids(segment) -> list[str]:
    return sorted(c.external_id for c in engage.members(segment))


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def dead_redis(app) -> None:
    """Point Engage at a port where no Redis listens (a fresh URL: no breaker state)."""
    app.config["ENGAGE_REDIS_URL"] = f"redis://u{uuid.uuid4().hex[:8]}@127.0.0.1:1/0"


def test_tracked_change_updates_membership_after_commit(app, session, mode):
    pro = engage.create_segment("Pro", PRO)
    if mode == "redis":
        engage.work(burst=True)
    user = User(email="ada@example.com", plan="pro")
    session.add(user)
    session.commit()
    if mode == "redis":
        assert jobs.dispatch.wait_for_notifications()  # the request did not wait for Redis
        queue = jobs.get_queue()
        assert [j.func_name for j in queue.jobs] == ["flask_engage.jobs.rqjobs.job_drain_outbox"]
        assert member_ids(pro) == []
        job = queue.jobs[0]
        engage.work(burst=True)
        assert job.get_status(refresh=True) == "finished"
    assert member_ids(pro) == [str(user.id)]
    user.plan = "free"
    session.commit()
    if mode == "redis":
        engage.work(burst=True)
    assert member_ids(pro) == []


@pytest.mark.parametrize("mode", ["inline"], indirect=True)
def test_redis_down_commits_succeed_and_a_worker_catches_up(app, session, caplog, queue_name):
    pro = engage.create_segment("Pro", PRO)
    dead_redis(app)
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="flask_engage"):
        for i in range(30):
            session.add(User(email=f"u{i}@example.com", plan="pro"))
            session.commit()
        for user in User.query.filter(User.id <= 10):
            user.city = "Lagos"  # a second change for some customers
        session.commit()
        assert jobs.dispatch.wait_for_notifications()  # the notifier thread tried Redis
    took = time.perf_counter() - started
    assert took < 5, f"30 commits with Redis down took {took:.1f}s"
    warnings = [r for r in caplog.records if "could not reach Redis" in r.getMessage()]
    assert len(warnings) == 1  # then the breaker skips Redis
    assert member_ids(pro) == []
    assert count(OutboxItem) >= 30
    if REDIS_URL:
        app.config.update(ENGAGE_REDIS_URL=REDIS_URL, ENGAGE_QUEUE=queue_name)
        engage.work(burst=True)
    else:
        engage.run_due()
    assert member_ids(pro) == sorted(str(u.id) for u in User.query)
    assert count(OutboxItem) == 0
    joins = db.session.execute(
        select(MembershipChange.customer_id, func.count())
        .where(MembershipChange.segment_id == pro.id)
        .group_by(MembershipChange.customer_id)
    ).all()
    assert len(joins) == 30 and all(n == 1 for _, n in joins)


@pytest.mark.parametrize("mode", ["inline"], indirect=True)
def test_two_workers_drain_one_backlog_exactly_once(app, session):
    pro = engage.create_segment("Pro", PRO)
    dead_redis(app)
    users = [User(email=f"u{i}@example.com", plan="pro" if i % 2 else "free") for i in range(80)]
    for chunk in range(0, 80, 10):  # many small commits: many outbox rows, repeats included
        session.add_all(users[chunk : chunk + 10])
        session.commit()
    for user in users[:20]:
        user.city = "Accra"
    session.commit()
    backlog = count(OutboxItem)
    assert backlog >= 80

    joined: list[tuple[str, str]] = []
    errors: list[BaseException] = []

    def on_join(sender, segment, customer):
        joined.append((segment.slug, customer.external_id))

    def worker():
        try:
            with app.app_context():
                jobs.drain_outbox(batch=7)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    signals.segment_joined.connect(on_join, app)
    try:
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        signals.segment_joined.disconnect(on_join, app)
    assert errors == []
    assert count(OutboxItem) == 0
    assert len(joined) == len(set(joined)) == 80 + 40  # everyone joins All, the odd ones Pro
    assert member_ids(pro) == sorted(str(u.id) for u in users if u.plan == "pro")
    assert count(MembershipChange) == 120
    assert count(Membership) == 120


def test_jobs_are_idempotent(app, session, mode):
    pro = engage.create_segment("Pro", PRO)
    session.add_all([User(email=f"u{i}@example.com", plan="pro") for i in range(5)])
    session.commit()
    engage.work(burst=True)
    before = (member_ids(pro), count(MembershipChange), count(Membership))
    assert jobs.job_drain_outbox() == 0
    second = {o.segment: (o.joined, o.left) for o in engage.recompute()}
    assert second == {"all": (0, 0), "pro": (0, 0)}
    jobs.job_recompute(pro.id)
    engage.run_due()
    assert (member_ids(pro), count(MembershipChange), count(Membership)) == before
    assert len(before[0]) == 5
