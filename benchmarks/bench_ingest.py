"""HTTP ingestion on a real WSGI server: single events vs batches of 100.

Starts ``gunicorn -w 2`` on 127.0.0.1 serving ``ingest_app:create_app()``
(tests/hostapp on PostgreSQL, evaluation queued in Redis database 14, no worker),
then load threads (http.client, keep-alive when the server allows it) POST to
/engage/api/track for a fixed time per case: one event per request, then
``{"batch": [100 events]}``. Events go to 10,000 customers (created on first event).
Usage: python benchmarks/bench_ingest.py [--seconds 10] [--threads 4]
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import signal
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path

from common import REDIS_URL, ensure_database, percentile, reset_schema, table
from ingest_app import API_KEY, INGEST_URL
from sqlalchemy import func, select

from flask_engage.models import Event
from tests.hostapp import create_app, db, engage
from tests.smtp_sink import free_port

HERE = Path(__file__).resolve().parent
CUSTOMERS = 10_000
SEGMENTS = {
    "Pro": {"attribute": "plan", "op": "eq", "value": "pro"},
    "Viewed pricing this week": {"event": "Viewed page", "window": {"last_days": 7}},
    "Quiet for 30 days": {
        "event": "Viewed page",
        "window": {"last_days": 30},
        "count": {"op": "eq", "value": 0},
    },
}


def prepare() -> None:
    """Fresh schema on the ingest database, with a few segments; Redis db flushed."""
    from redis import Redis

    ensure_database(INGEST_URL)
    app = create_app(INGEST_URL)
    with app.app_context():
        reset_schema(db.engine)
        db.create_all()
        engage.create_all()
        for name, filters in SEGMENTS.items():
            engage.create_segment(name, filters)
        db.session.remove()
        db.engine.dispose()
    Redis.from_url(REDIS_URL).flushdb()


def event(rng: random.Random) -> dict[str, object]:
    return {
        "id": f"c{rng.randrange(CUSTOMERS)}",
        "event": "Viewed page",
        "properties": {"path": f"/docs/{rng.randrange(50)}", "seconds": rng.randrange(600)},
    }


def load(port: int, batch: int, seconds: float, threads: int) -> tuple[float, list[float]]:
    """Wall seconds and request latencies (s) of ``threads`` clients sending for ``seconds``."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    begun = time.perf_counter()
    deadline = begun + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        while time.perf_counter() < deadline:
            body = event(rng) if batch == 1 else {"batch": [event(rng) for _ in range(batch)]}
            payload = json.dumps(body)
            started = time.perf_counter()
            conn.request("POST", "/engage/api/track", payload, headers)
            response = conn.getresponse()
            data = response.read()
            mine.append(time.perf_counter() - started)
            if response.status != 200:
                errors.append(f"{response.status} {data[:200]!r}")
                break
        conn.close()
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    took = time.perf_counter() - begun
    if errors:
        raise SystemExit(f"request failed: {errors[0]}")
    return took, latencies


def wait_for(port: int, process: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if process.poll() is not None:
            raise SystemExit("gunicorn exited early")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("gunicorn did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    prepare()
    port = free_port()
    process = subprocess.Popen(
        [
            "gunicorn",
            "-w",
            str(args.workers),
            "-b",
            f"127.0.0.1:{port}",
            "--chdir",
            str(HERE),
            "--log-level",
            "warning",
            "ingest_app:create_app()",
        ]
    )
    rows = []
    try:
        wait_for(port, process)
        load(port, 1, 1.0, args.threads)  # warm up: workers import, connect, first customers
        for label, batch in (("single event", 1), ("batch of 100", 100)):
            took, latencies = load(port, batch, args.seconds, args.threads)
            requests = len(latencies)
            rows.append(
                [
                    label,
                    requests,
                    requests / took,
                    requests * batch / took,
                    statistics.median(latencies) * 1000,
                    percentile(latencies, 99) * 1000,
                ]
            )
            print(f"{label} done", flush=True)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    app = create_app(INGEST_URL)
    with app.app_context():
        stored = db.session.scalar(select(func.count()).select_from(Event))
        db.session.remove()
        db.engine.dispose()
    ratio = rows[1][3] / rows[0][3]
    print(
        f"\ngunicorn -w {args.workers} (sync), {args.threads} client threads on the same "
        f"machine, {args.seconds:g} s per case, {stored:,} events stored\n"
    )
    print(
        table(
            ["request", "requests", "requests/s", "events/s", "p50 (ms)", "p99 (ms)"],
            rows,
        )
    )
    print(f"\nbatch / single events/s: {ratio:.1f}x")


if __name__ == "__main__":
    main()
