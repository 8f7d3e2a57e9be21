"""Scale-out: 1, 2 and 4 ``flask engage worker`` processes on one queue, one PostgreSQL.

Two workloads, each run once per worker count with the workers already started
(their start-up is not timed):

* **broadcast**: an email broadcast to N customers (``--recipients``). Timed from
  ``engage.send_broadcast`` (queued in Redis) until every message is ``sent``. The
  SMTP sink runs in ``--sinks`` processes sharing one port (``SO_REUSEPORT``) and
  writes down every recipient it accepts, so duplicates are counted, not assumed.
* **recompute**: every segment (the five DESIGN.md examples, ``--copies`` of each)
  queued as one ``job_recompute`` each over ``--customers`` customers with 20 events
  each (bench_recompute.py's data), memberships emptied first so every round does
  the same work (everyone joins). Timed until every segment was computed.

Throughput per worker count and the speed-up over one worker are printed as
Markdown tables. Database ``engage_bench_workers``, Redis ``BENCH_REDIS_URL``
(flushed).
Usage: python benchmarks/bench_workers.py [--workers 1 2 4] [--recipients 20000]
       [--customers 100000] [--copies 4] [--sinks 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_recompute import SEGMENTS
from bench_recompute import load as load_events
from common import REDIS_URL, ROOT, ensure_database, reset_schema, table
from redis import Redis
from sqlalchemy import delete, func, insert, select, update
from workers_app import QUEUE, WORKERS_URL, create_app

from flask_engage.db import operation_session
from flask_engage.jobs import dispatch
from flask_engage.jobs.rqjobs import job_recompute
from flask_engage.models import Broadcast, Customer, Membership, Message, Segment
from flask_engage.segments import service as segment_service
from tests.hostapp import db, engage
from tests.smtp_sink import free_port

HERE = Path(__file__).resolve().parent


# -- the SMTP sink: several processes on one port ---------------------------------------
def sink(port: int, record: str) -> None:
    """One sink process: accept every message, append its recipients to ``record``."""
    from aiosmtpd.smtp import SMTP

    class Recorder:
        def __init__(self) -> None:
            self.out = open(record, "a", buffering=1)  # noqa: SIM115 (lives as long as the process)

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            for rcpt in envelope.rcpt_tos:
                self.out.write(rcpt + "\n")
            return "250 OK"

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(512)
    handler = Recorder()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(loop.create_server(lambda: SMTP(handler), sock=listener))
    loop.run_forever()


def start_sinks(count: int, port: int, directory: str) -> list[Any]:
    import multiprocessing

    processes = [
        multiprocessing.Process(
            target=sink, args=(port, os.path.join(directory, f"sink-{i}.txt")), daemon=True
        )
        for i in range(count)
    ]
    for process in processes:
        process.start()
    wait_for(lambda: _accepts(port), 10, "the SMTP sink")
    return processes


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def received(directory: str) -> Counter[str]:
    """Every recipient the sinks accepted, with how many messages each got."""
    counts: Counter[str] = Counter()
    for path in Path(directory).glob("sink-*.txt"):
        counts.update(path.read_text().split())
    return counts


# -- workers ----------------------------------------------------------------------------
def start_workers(count: int, port: int) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]),
        "BENCH_SMTP_PORT": str(port),
    }
    command = [sys.executable, "-m", "flask", "--app", "workers_app:create_app", "engage"]
    return [
        subprocess.Popen(
            [*command, "worker", "--name", f"bench-{os.getpid()}-{count}-{i}"],
            cwd=HERE,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for i in range(count)
    ]


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()


def wait_for(done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def workers_ready(count: int) -> bool:
    connection = Redis.from_url(REDIS_URL)
    try:
        return len([k for k in connection.smembers("rq:workers:" + QUEUE)]) >= count
    finally:
        connection.close()


# -- workloads --------------------------------------------------------------------------
def load_recipients(size: int) -> Segment:
    now = datetime.now(UTC)
    reset_schema(db.engine)
    db.create_all()
    engage.create_all()
    with db.engine.begin() as conn:
        for first in range(0, size, 10_000):
            conn.execute(
                insert(Customer.__table__),
                [
                    {
                        "external_id": str(n),
                        "email": f"c{n}@example.com",
                        "attributes": {"plan": "pro"},
                        "created_at": now,
                        "updated_at": now,
                    }
                    for n in range(first, min(size, first + 10_000))
                ],
            )
    segment = engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
    engage.recompute(segment)  # here: no worker runs yet
    assert engage.members(segment).count() == size
    db.session.remove()  # an open transaction would block the next schema reset
    return segment


def broadcast_round(segment: Segment, workers: int, size: int, port: int, record: str) -> list[Any]:
    with db.engine.begin() as conn:
        conn.execute(delete(Message.__table__))
    for path in Path(record).glob("sink-*.txt"):
        path.write_text("")
    processes = start_workers(workers, port)
    try:
        wait_for(lambda: workers_ready(workers), 60, f"{workers} workers")
        broadcast = engage.create_broadcast(
            f"Scale {workers}",
            channel="email",
            segments=[segment],
            subject="News for {{ customer.plan }} customers",
            body="<p>Hello {{ customer.email }},</p><p>Our offer is here.</p>",
        )
        started = time.perf_counter()
        engage.send_broadcast(broadcast)

        def finished() -> bool:
            with operation_session() as session:
                return session.get(Broadcast, broadcast.id).status == "sent"  # type: ignore[union-attr]

        wait_for(finished, 900, "the broadcast")
        took = time.perf_counter() - started
    finally:
        stop_workers(processes)
    counts = received(record)
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    assert len(counts) == size, (len(counts), size)
    return [workers, size, took, size / took, duplicates]


def segments_for_scale_out(copies: int) -> list[int]:
    with operation_session() as session:
        return [
            segment_service.create_segment(session, f"{name} #{copy}", filters, None).id
            for copy in range(1, copies + 1)
            for name, filters in SEGMENTS.items()
        ]


def recompute_round(segment_ids: list[int], workers: int, port: int) -> list[Any]:
    with db.engine.begin() as conn:
        conn.execute(delete(Membership.__table__))
        conn.execute(
            update(Segment.__table__)
            .where(Segment.__table__.c.id.in_(segment_ids))
            .values(last_computed_at=None, member_count=0)
        )
    processes = start_workers(workers, port)
    try:
        wait_for(lambda: workers_ready(workers), 60, f"{workers} workers")
        started = time.perf_counter()
        for segment_id in segment_ids:
            assert dispatch.enqueue(job_recompute, segment_id, False)

        def finished() -> bool:
            with operation_session() as session:
                waiting = session.scalar(
                    select(func.count()).where(
                        Segment.id.in_(segment_ids), Segment.last_computed_at.is_(None)
                    )
                )
            return waiting == 0

        wait_for(finished, 1800, "the recomputes")
        took = time.perf_counter() - started
    finally:
        stop_workers(processes)
    with operation_session() as session:
        members = session.scalar(select(func.count()).select_from(Membership)) or 0
    return [workers, len(segment_ids), took, len(segment_ids) / took, members]


def with_speedup(rows: list[list[Any]], rate: int) -> list[list[Any]]:
    base = rows[0][rate]
    return [[*row, row[rate] / base] for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--sinks", type=int, default=2)
    args = parser.parse_args()
    ensure_database(WORKERS_URL)
    Redis.from_url(REDIS_URL).flushdb()
    port = free_port()
    os.environ["BENCH_SMTP_PORT"] = str(port)
    app = create_app()
    with tempfile.TemporaryDirectory() as record, app.app_context():
        sinks = start_sinks(args.sinks, port, record)
        try:
            segment = load_recipients(args.recipients)
            rows = [
                broadcast_round(segment, n, args.recipients, port, record) for n in args.workers
            ]
            print(f"\n### Broadcast to {args.recipients:,} recipients ({args.sinks} sinks)\n")
            print(
                table(
                    ["workers", "messages", "seconds", "messages/s", "duplicates", "vs 1 worker"],
                    with_speedup(rows, 3),
                )
            )
            seconds = load_events(app, args.customers, datetime.now(UTC))
            segment_ids = segments_for_scale_out(args.copies)
            rows = [recompute_round(segment_ids, n, port) for n in args.workers]
            print(
                f"\n### Recompute of {len(segment_ids)} segments over {args.customers:,} "
                f"customers ({args.customers * 20:,} events, loaded in {seconds:.1f} s)\n"
            )
            print(
                table(
                    ["workers", "segments", "seconds", "segments/s", "memberships", "vs 1 worker"],
                    with_speedup(rows, 3),
                )
            )
        finally:
            for process in sinks:
                process.terminate()


if __name__ == "__main__":
    main()
