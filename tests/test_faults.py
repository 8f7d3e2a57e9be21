"""Fault injection: workers killed with SIGKILL, Redis killed and restarted, PostgreSQL
connections terminated, the clock jumping back and forth. Each test checks in the
database that nothing was lost and nothing was done twice.

A worker killed in the middle of a broadcast is tested in test_smtp.py
(``test_worker_killed_mid_send_resumes_with_at_most_one_duplicate``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Select, func, insert, select, text

from flask_engage import jobs
from flask_engage.models import (
    AutomationRun,
    Customer,
    Membership,
    MembershipChange,
    Message,
    OutboxItem,
    Segment,
    utcnow,
)
from tests.hostapp import create_app, db, engage
from tests.smtp_sink import free_port

pytestmark = pytest.mark.fault

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "fault_worker.py"


# --- helpers ----------------------------------------------------------------------------


def start_worker(*args: object) -> subprocess.Popen:
    """tests/fault_worker.py in a new process (it inherits the test database URL)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], cwd=ROOT, env=env)


def kill(process: subprocess.Popen) -> None:
    """SIGKILL, and check the process was still running (not exited, not crashed)."""
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the process ended before it was killed"


def wait_for(
    condition: Callable[[], object], timeout: float, what: str, every: float = 0.002
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def add_customers(n: int, **attributes: object) -> None:
    """Bulk-load customers with Core (as an import would): no outbox rows, no memberships."""
    now = utcnow()
    db.session.execute(
        insert(Customer.__table__),
        [
            {
                "external_id": str(i),
                "email": f"c{i}@example.com",
                "attributes": {"n": i, **attributes},
                "created_at": now,
                "updated_at": now,
            }
            for i in range(n)
        ],
    )
    db.session.commit()


def scalar(query: Select) -> Any:
    """One value, read in a fresh transaction (other processes' commits visible)."""
    db.session.expire_all()
    value = db.session.scalar(query)
    db.session.rollback()
    return value


def members(segment_id: int) -> int:
    """The segment's current number of members."""
    return scalar(select(func.count()).where(Membership.segment_id == segment_id))


def changes(segment_id: int, kind: str = "joined") -> Counter:
    """Change rows of ``kind`` per customer."""
    db.session.expire_all()
    rows = db.session.execute(
        select(MembershipChange.customer_id, func.count())
        .where(MembershipChange.segment_id == segment_id, MembershipChange.kind == kind)
        .group_by(MembershipChange.customer_id)
    ).all()
    db.session.rollback()
    return Counter(dict(rows))


def assert_exact_membership(segment_id: int, filters: dict, now=None) -> int:
    """Members = customers matching the filters (as of ``now``), and the change history
    agrees: each member joined once more than it left, each non-member as often."""
    count = members(segment_id)
    assert count == engage.count(filters, now=now)
    member_ids = set(
        db.session.scalars(
            select(Membership.customer_id).where(Membership.segment_id == segment_id)
        )
    )
    db.session.rollback()
    joined, left = changes(segment_id), changes(segment_id, "left")
    for customer_id in member_ids | set(joined) | set(left):
        assert joined[customer_id] - left[customer_id] == (customer_id in member_ids)
    assert scalar(select(func.count()).select_from(OutboxItem)) == 0
    return count


# --- 1. a worker killed in the middle of a recompute -------------------------------------

GROWN = {
    "all": [
        {"attribute": "n", "op": "gte", "value": 5000},
        {"attribute": "plan", "op": "ne", "value": "free"},
    ]
}


def test_worker_killed_mid_recompute_leaves_nothing_half_written(app, tmp_path):
    segment = engage.create_segment("Grown", GROWN)
    computed = segment.last_computed_at
    add_customers(20_000, plan="pro")
    marker = tmp_path / "writing"
    worker = start_worker("recompute", app.config["SQLALCHEMY_DATABASE_URI"], "grown", marker)
    wait_for(lambda: marker.exists() or worker.poll() is not None, 30, "the recompute")
    kill(worker)
    # killed while writing memberships: its transaction left no trace
    assert members(segment.id) == 0
    assert changes(segment.id) == Counter()
    assert scalar(select(Segment.last_computed_at).where(Segment.id == segment.id)) == computed

    engage.recompute("grown")
    assert assert_exact_membership(segment.id, GROWN) == 15_000
    assert set(changes(segment.id).values()) == {1}


# --- 2. a worker killed in the middle of an automation's sends ---------------------------

TRIAL = {"attribute": "plan", "op": "eq", "value": "trial"}


def test_worker_killed_mid_automation_resumes_with_at_most_one_duplicate(app, smtp):
    inbox, port = smtp
    total = 300
    trial = engage.create_segment("Trial", TRIAL)
    automation = engage.create_automation(
        "Nudge",
        trigger={"joins": trial},
        steps=[
            {"wait": {"days": 1}},
            {"send": {"channel": "email", "subject": "Day one", "body": "Hi {{ customer.n }}"}},
        ],
    )
    add_customers(total, plan="trial")
    t0 = utcnow()
    engage.recompute("trial", now=t0)
    assert scalar(select(func.count()).where(AutomationRun.status == "waiting")) == total
    url, due = app.config["SQLALCHEMY_DATABASE_URI"], (t0 + timedelta(days=1, minutes=1))

    worker = start_worker("run_due", url, due.isoformat(), port, 300)
    wait_for(
        lambda: sum(inbox.count().values()) >= total // 3 or worker.poll() is not None,
        30,
        "the first emails",
    )
    kill(worker)
    before = sum(inbox.count().values())
    assert 0 < before < total

    time.sleep(1.1)  # the killed worker's claims expire with a 1 s lease
    worker = start_worker("run_due", url, due.isoformat(), port, 1)
    assert worker.wait(timeout=60) == 0

    received = inbox.count()
    assert set(received) == {f"c{i}@example.com" for i in range(total)}
    duplicates = sum(n - 1 for n in received.values())
    assert duplicates <= 1  # only the email in flight at the kill
    db.session.expire_all()
    runs = db.session.execute(
        select(AutomationRun.customer_id, AutomationRun.status).where(
            AutomationRun.automation_id == automation.id
        )
    ).all()
    assert len(runs) == total and {status for _, status in runs} == {"completed"}
    assert len({customer_id for customer_id, _ in runs}) == total
    per_step = db.session.execute(
        select(Message.run_id, Message.step, Message.status, func.count())
        .where(Message.automation_id == automation.id)
        .group_by(Message.run_id, Message.step, Message.status)
    ).all()
    assert len(per_step) == total
    assert {(step, status, n) for _, step, status, n in per_step} == {(1, "sent", 1)}
    print(
        f"\nautomation worker killed after {before} of {total} emails; "
        f"duplicates after restart: {duplicates}"
    )


# --- 3. Redis killed and restarted while customers are tracked ---------------------------

PRO = {"attribute": "plan", "op": "eq", "value": "pro"}


def start_redis(port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    wait_for(lambda: _accepts(port), 10, "redis-server")
    return process


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
    except OSError:
        return False
    return True


@pytest.fixture
def redis_port():
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    port = free_port()
    processes: list[subprocess.Popen] = [start_redis(port)]
    yield port, processes
    for process in processes:
        if process.poll() is None:
            kill(process)


def test_redis_killed_and_restarted_while_tracking_loses_nothing(app, redis_port, monkeypatch):
    port, processes = redis_port
    # a short breaker, so the worker is back on Redis right after the restart
    monkeypatch.setattr(jobs.dispatch, "REDIS_RETRY_AFTER", 0.2)
    app.config.update(
        ENGAGE_REDIS_URL=f"redis://127.0.0.1:{port}/0",
        ENGAGE_QUEUE=f"engage-fault-{uuid.uuid4().hex[:8]}",
    )
    pro = engage.create_segment("Pro", PRO)
    engage.work(burst=True)
    total = 60
    for i in range(total):
        if i == 20:
            engage.work(burst=True)  # a worker keeps up while Redis is there
        if i == 30:
            kill(processes[0])  # Redis dies, with the jobs it held
        started = time.perf_counter()
        engage.identify(f"u{i}", email=f"u{i}@example.com", plan="pro")
        db.session.commit()  # never fails
        assert time.perf_counter() - started < 2
    assert members(pro.id) == 20
    assert scalar(select(func.count()).select_from(OutboxItem)) == total - 20

    processes.append(start_redis(port))
    time.sleep(0.3)
    assert engage.work(burst=True) is True  # the worker ran on the restarted Redis
    assert assert_exact_membership(pro.id, PRO) == total
    assert set(changes(pro.id).values()) == {1}
    assert len(jobs.get_queue()) == 0


# --- 4. PostgreSQL terminates a worker's connection mid-batch ----------------------------


def test_connection_terminated_mid_recompute_then_run_due_finishes(app, db_kind):
    if db_kind != "postgresql":
        pytest.skip("pg_terminate_backend is PostgreSQL's")
    segment = engage.create_segment("Grown", GROWN)
    add_customers(20_000, plan="pro")
    worker_app = create_app(
        f"{app.config['SQLALCHEMY_DATABASE_URI']}?application_name=engage_fault"
    )
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with worker_app.app_context():
                engage.recompute("grown")
                db.engine.dispose()
        except BaseException as exc:  # asserted below
            errors.append(exc)

    thread = threading.Thread(target=worker)
    monitor = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    find = (
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'engage_fault'"
        " AND state = 'active' AND query ILIKE 'INSERT INTO engage_membership%'"
    )
    thread.start()
    try:
        pids: list[int] = []
        wait_for(
            lambda: pids.extend(monitor.scalars(text(find))) or pids or not thread.is_alive(),
            30,
            "the recompute's INSERT",
        )
        assert pids, "the recompute finished before it could be interrupted"
        assert monitor.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pids[0]})
        thread.join(30)
    finally:
        monitor.close()
    assert errors == []  # the failure is the job's: recorded on the segment, not raised
    db.session.expire_all()
    failed = db.session.get(Segment, segment.id)
    assert failed.last_error and "terminat" in failed.last_error
    assert members(segment.id) == 0 and changes(segment.id) == Counter()

    # the host app keeps working, and its own tracked writes are evaluated
    engage.identify("late", email="late@example.com", plan="pro", n=99_999)
    db.session.commit()
    late = db.session.scalar(select(Customer.id).where(Customer.external_id == "late"))
    assert members(segment.id) == 1 and changes(segment.id) == Counter({late: 1})

    engage.run_due()  # retries the failed segment
    assert assert_exact_membership(segment.id, GROWN) == 15_001
    assert set(changes(segment.id).values()) == {1}
    assert scalar(select(Segment.last_error).where(Segment.id == segment.id)) is None


# --- 5. the clock jumps forward and back ---------------------------------------------------

ACTIVE = {"event": "Logged in", "window": {"last_days": 7}}
DORMANT = {"event": "Logged in", "window": {"last_days": 7}, "count": {"op": "eq", "value": 0}}


def test_clock_jumps_keep_segments_exact_and_send_each_message_once(app):
    t0 = utcnow()
    active = engage.create_segment("Active", ACTIVE)
    dormant = engage.create_segment("Dormant", DORMANT)
    automation = engage.create_automation(
        "Win back",
        trigger={"joins": dormant},
        steps=[
            {"wait": {"days": 3}},
            {"if": DORMANT},
            {"send": {"channel": "email", "subject": "We miss you", "body": "Come back"}},
        ],
    )
    for i in range(10):  # c{i} last logged in i days ago
        engage.identify(f"c{i}", email=f"c{i}@example.com")
        engage.track(f"c{i}", "Logged in", timestamp=t0 - timedelta(days=i, minutes=1))
    db.session.commit()

    sent: list[str] = []

    def step(days: int) -> list[str]:
        """``run_due`` at t0 + days; checks both segments; returns who got an email."""
        now = t0 + timedelta(days=days)
        with app.extensions["mail"].record_messages() as outbox:
            engage.run_due(now)
        assert_exact_membership(active.id, ACTIVE, now)
        assert_exact_membership(dormant.id, DORMANT, now)
        emailed = sorted(address for message in outbox for address in message.recipients)
        sent.extend(emailed)
        return emailed

    assert members(dormant.id) == 3  # c7..c9 joined when they were tracked, at t0
    assert step(10) == [f"c{i}@example.com" for i in (7, 8, 9)]  # their 3-day wait is over
    assert members(dormant.id) == 10  # everyone, and c0..c6 wait until t0 + 13 days
    assert step(-5 + 10) == []  # back 5 days: c0, c1 logged in within that week
    assert members(active.id) == 2
    assert step(12) == []  # forward: c0, c1 are dormant again; the waits are not over
    assert step(14) == [f"c{i}@example.com" for i in range(7)]
    assert step(14) == [] and step(9) == [] and step(15) == []
    assert sorted(Counter(sent).values()) == [1] * 10
    db.session.expire_all()
    per_step = db.session.execute(
        select(Message.run_id, Message.step, func.count())
        .where(Message.automation_id == automation.id)
        .group_by(Message.run_id, Message.step)
    ).all()
    assert len(per_step) == 10 and {n for *_, n in per_step} == {1}
    runs = db.session.execute(
        select(AutomationRun.customer_id, func.count())
        .where(AutomationRun.automation_id == automation.id)
        .group_by(AutomationRun.customer_id)
    ).all()
    assert len(runs) == 10 and {n for _, n in runs} == {1}  # no re-entry on re-joining


# --- 6. Redis goes away under a running `flask engage worker` -------------------------------


@pytest.mark.skipif(not os.environ.get("ENGAGE_TEST_REDIS_URL"), reason="needs Redis")
def test_redis_outage_under_a_running_worker_the_schedule_goes_on(app, queue_name):
    from redis import Redis
    from rq import Queue

    from flask_engage.jobs import job_run_due
    from tests.tcp_proxy import TcpProxy

    redis = make_url_parts(os.environ["ENGAGE_TEST_REDIS_URL"])
    proxy = TcpProxy((redis["host"], redis["port"])).start()
    redis_url = f"redis://127.0.0.1:{proxy.port}/{redis['db']}"
    pro = engage.create_segment("Pro", PRO)
    worker = start_worker("worker", app.config["SQLALCHEMY_DATABASE_URI"], redis_url, queue_name, 1)
    app.config.update(ENGAGE_REDIS_URL=redis_url, ENGAGE_QUEUE=queue_name)
    try:
        wait_for(lambda: engage.status()["last_tick"] is not None, 30, "a first tick", 0.1)
        engage.identify("before", plan="pro")
        db.session.commit()
        wait_for(lambda: members(pro.id) == 1, 10, "the worker to evaluate a tracked change", 0.1)

        proxy.cut()  # Redis is gone for six seconds
        cut_at = utcnow()
        engage.identify("during", plan="pro")
        db.session.commit()  # Redis down: the work waits in the outbox
        wait_for(lambda: members(pro.id) == 2, 5, "the tick to drain the outbox", 0.1)
        wait_for(lambda: engage.status()["last_tick"] > cut_at + timedelta(seconds=1), 5, "a tick")
        time.sleep(max(0.0, 6 - (utcnow() - cut_at).total_seconds()))
        proxy.restore()

        # RQ's loop comes back: a job queued now is done by the worker
        queue = Queue(queue_name, connection=Redis.from_url(redis_url))
        job = queue.enqueue(job_run_due)
        try:
            wait_for(lambda: job.get_status(refresh=True) == "finished", 40, "RQ's loop to resume")
        except AssertionError:
            worker.send_signal(signal.SIGUSR1)  # its stacks, in the captured output
            time.sleep(1)
            raise
        assert worker.poll() is None  # the worker process never died
        assert engage.status()["schedule_ok"]
    finally:
        proxy.stop()
        if worker.poll() is None:
            kill(worker)


def make_url_parts(url: str) -> dict[str, Any]:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    return {
        "host": parsed.hostname or "127.0.0.1",
        "port": parsed.port or 6379,
        "db": int(parsed.path.strip("/") or 0),
    }


@pytest.mark.skipif(not os.environ.get("ENGAGE_TEST_REDIS_URL"), reason="needs Redis")
def test_sigterm_stops_a_running_worker(app, queue_name):
    """Warm shutdown: the worker (RQ loop and ticker) ends on SIGTERM, idle or not."""
    worker = start_worker(
        "worker",
        app.config["SQLALCHEMY_DATABASE_URI"],
        os.environ["ENGAGE_TEST_REDIS_URL"],
        queue_name,
        1,
    )
    try:
        wait_for(lambda: engage.status()["last_tick"] is not None, 30, "a first tick", 0.1)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0
    finally:
        if worker.poll() is None:
            kill(worker)
