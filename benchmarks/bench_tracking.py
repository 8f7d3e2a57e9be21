"""Request overhead of a tracked model (User) vs an untracked one (Note).

A Flask view inserts one row and commits, called through ``app.test_client``;
requests alternate in blocks so all kinds see the same conditions. A third view is
the floor of any same-transaction tracking: it inserts a Note and, by hand-written
SQL in the same transaction, the rows Engage writes for a sign-up (the customer,
its event, one outbox row; one statement on PostgreSQL, as Engage does). Runs on
SQLite and PostgreSQL, with 5 segments, inline (no Redis: the evaluation runs in
the request after commit) and queued (ENGAGE_REDIS_URL: evaluation enqueued).
The ratio of mean times and, less sensitive to a busy machine's outliers, of medians.
Usage: python benchmarks/bench_tracking.py [-n 2000] [--only-queued]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

from common import POSTGRES_URL, REDIS_URL, ensure_database, reset_schema, table
from flask import Flask
from sqlalchemy import text

from tests.hostapp import Note, User, create_app, db, engage

TRACKING_URL = POSTGRES_URL.rsplit("/", 1)[0] + "/engage_bench_tracking"
SEGMENTS = {
    "Pro": {"attribute": "plan", "op": "eq", "value": "pro"},
    "In Lagos": {"attribute": "city", "op": "eq", "value": "Lagos"},
    "Pro in Lagos": {
        "all": [
            {"attribute": "plan", "op": "eq", "value": "pro"},
            {"attribute": "city", "op": "eq", "value": "Lagos"},
        ]
    },
    "New": {"event": "Signed up", "window": {"last_days": 7}},
    "Not logged in for 30 days": {
        "event": "Logged in",
        "window": {"last_days": 30},
        "count": {"op": "eq", "value": 0},
    },
}


FLOOR_POSTGRES = """
WITH customer AS (
    INSERT INTO engage_customers (external_id, email, attributes, created_at, updated_at)
    VALUES (:ext, :email, CAST(:attrs AS JSONB), CAST(:now AS TIMESTAMPTZ),
            CAST(:now AS TIMESTAMPTZ))
    RETURNING id
), queued AS (
    INSERT INTO engage_outbox (task, key, created_at, attempts)
    SELECT 'evaluate', CAST(id AS VARCHAR), CAST(:now AS TIMESTAMPTZ), 0 FROM customer
)
INSERT INTO engage_events (customer_id, name, properties, occurred_at)
SELECT id, 'Signed up', CAST(:props AS JSONB), CAST(:now AS TIMESTAMPTZ) FROM customer
RETURNING id
"""
FLOOR_SQLITE = [
    "INSERT INTO engage_customers (external_id, email, attributes, created_at, updated_at)"
    " VALUES (:ext, :email, :attrs, :now, :now) RETURNING id",
    "INSERT INTO engage_events (customer_id, name, properties, occurred_at)"
    " VALUES (:customer, 'Signed up', :props, :now) RETURNING id",
    "INSERT INTO engage_outbox (task, key, created_at, attempts)"
    " VALUES ('evaluate', :customer, :now, 0)",
]


def build(url: str, redis: bool) -> Flask:
    config: dict[str, Any] = {"ENGAGE_REDIS_URL": REDIS_URL} if redis else {}
    app = create_app(url, **config)

    @app.post("/users/<int:n>")
    def add_user(n: int) -> str:
        db.session.add(
            User(
                email=f"u{n}@example.com",
                plan="pro" if n % 2 else "free",
                city="Lagos" if n % 3 else "Accra",
            )
        )
        db.session.commit()
        return "ok"

    @app.post("/floor/<int:n>")
    def add_note_and_rows(n: int) -> str:
        db.session.add(Note(text=f"note {n}"))
        db.session.flush()
        params = {
            "ext": f"floor-{n}",
            "email": f"f{n}@example.com",
            "attrs": json.dumps({"plan": "pro", "city": "Lagos"}),
            "now": datetime.now(UTC).isoformat(),
            "props": "{}",
        }
        if db.session.get_bind().dialect.name == "postgresql":
            db.session.execute(text(FLOOR_POSTGRES), params)
        else:
            customer, event, queued = FLOOR_SQLITE
            params["customer"] = db.session.execute(text(customer), params).scalar_one()
            db.session.execute(text(event), params).scalar_one()
            db.session.execute(text(queued), params)
        db.session.commit()
        return "ok"

    @app.post("/notes/<int:n>")
    def add_note(n: int) -> str:
        db.session.add(Note(text=f"note {n}"))
        db.session.commit()
        return "ok"

    with app.app_context():
        reset_schema(db.engine)
        db.create_all()
        engage.create_all()
        for name, filters in SEGMENTS.items():
            engage.create_segment(name, filters)
    return app


def measure(
    app: Flask, requests: int, block: int = 100
) -> tuple[list[float], list[float], list[float]]:
    """Per-request seconds for tracked, untracked and floor inserts, in alternating blocks."""
    client = app.test_client()
    tracked: list[float] = []
    untracked: list[float] = []
    floor: list[float] = []
    for n in range(50):  # warm up every path
        client.post(f"/users/{10_000_000 + n}")
        client.post(f"/notes/{n}")
        client.post(f"/floor/{10_000_000 + n}")
    for start in range(0, requests, block):
        for path, out in (("users", tracked), ("notes", untracked), ("floor", floor)):
            for n in range(start, start + block):
                begun = time.perf_counter()
                response = client.post(f"/{path}/{n}")
                out.append(time.perf_counter() - begun)
                assert response.status_code == 200, response.data
    return tracked, untracked, floor


def flush_redis() -> None:
    from redis import Redis

    Redis.from_url(REDIS_URL).flushdb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--requests", type=int, default=2000)
    parser.add_argument(
        "--only-queued", action="store_true", help="skip inline mode (Redis queue only)"
    )
    args = parser.parse_args()
    ensure_database(TRACKING_URL)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, url in (
            ("SQLite", f"sqlite:///{tmp}/bench-{{}}.db"),
            ("PostgreSQL", TRACKING_URL),
        ):
            modes = (("inline", False), ("Redis queue", True))
            for mode, redis in modes[1:] if args.only_queued else modes:
                if redis:
                    flush_redis()
                app = build(url.format(mode[:6]) if "{}" in url else url, redis)
                tracked, untracked, floor = measure(app, args.requests)
                with app.app_context():
                    customers = engage.count({"all": []})
                    db.session.remove()
                    db.engine.dispose()
                if redis:
                    flush_redis()
                t, u = statistics.mean(tracked) * 1000, statistics.mean(untracked) * 1000
                f = statistics.mean(floor) * 1000
                median = statistics.median(tracked) / statistics.median(untracked)
                rows.append([label, mode, args.requests, customers, u, f, t, t / u, median, t / f])
                print(
                    f"{label} {mode}: untracked {u:.2f} ms, same rows by hand {f:.2f} ms,"
                    f" tracked {t:.2f} ms",
                    flush=True,
                )
    print()
    print(
        table(
            [
                "database",
                "evaluation",
                "requests each",
                "customers",
                "untracked Note (ms)",
                "Note + same rows by hand (ms)",
                "tracked User (ms)",
                "tracked / untracked",
                "ratio of medians",
                "tracked / by hand",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
