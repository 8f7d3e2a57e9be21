"""Latency of incremental evaluation: one customer against every segment.

This is what the ``evaluate`` job does after a tracked write:
``membership.evaluate_customers`` for one customer, in an operation session (one
query for the segments, then the membership diff, committed). Uses the data left
by ``bench_recompute.py`` (run it first with the size you want), with 10, 20, 50
and 200 segments. Three kinds of change: unknown (every segment is re-checked), a
tracked "Purchase" event, and a changed "plan" attribute (only the segments that
read them, see ``flask_engage.changes.Changes``). Each customer is evaluated twice:
the first run writes its joins (new segments), the second finds nothing to change.
Segments count as recomputed when the run starts, as a running schedule keeps them.

The last row of each size goes through the production path: ``engage.identify``
changes the customer's plan and commits (the ``evaluate`` outbox row records
``attribute:plan``), then what the worker runs, ``drain_outbox()``, is timed: claim
the row, evaluate the segments that read the plan, write the changes, commit.
Usage: python benchmarks/bench_incremental.py [--customers 300] [--segments 10 20 50 200]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from common import POSTGRES_URL, REDIS_URL, percentile, table
from sqlalchemy import func, select, update

from flask_engage.changes import Changes
from flask_engage.db import operation_session
from flask_engage.jobs.outbox import drain_outbox
from flask_engage.models import Customer, Segment
from flask_engage.segments import service as segment_service
from flask_engage.segments.membership import evaluate_customers
from tests.hostapp import create_app, db, engage

PLANS = ("free", "pro", "team")
CITIES = ("Lagos", "Accra", "Nairobi", "Cairo")


def template(i: int) -> dict[str, Any]:
    """A varied segment filter: attributes, event counts, sums, windows, nesting."""
    kind = i % 6
    if kind == 0:
        return {"attribute": "plan", "op": "eq", "value": PLANS[i % 3]}
    if kind == 1:
        return {"attribute": "city", "op": "in", "value": list(CITIES[: 1 + i % 4])}
    if kind == 2:
        return {
            "event": "Purchase",
            "window": {"last_days": 1 + i % 30},
            "count": {"op": "gte", "value": 1 + i % 5},
        }
    if kind == 3:
        return {
            "event": "Logged in",
            "window": {"last_days": 1 + i % 60},
            "count": {"op": "eq", "value": 0},
        }
    if kind == 4:
        return {
            "event": "Purchase",
            "window": {"calendar": "this_month"},
            "sum": {"property": "amount", "op": "gt", "value": 100 * (i % 20)},
        }
    return {
        "all": [
            {"attribute": "plan", "op": "ne", "value": PLANS[i % 3]},
            {
                "any": [
                    {"event": "Card used", "window": {"last_days": 1 + i % 14}},
                    {"not": {"attribute": "city", "op": "eq", "value": CITIES[i % 4]}},
                ]
            },
        ]
    }


def set_segment_count(total: int) -> None:
    """Add (or remove) generated segments until there are ``total``."""
    with operation_session() as session:
        present = session.scalar(select(func.count()).select_from(Segment))
        extra = list(
            session.scalars(
                select(Segment).where(Segment.name.like("bench %")).order_by(Segment.id.desc())
            )
        )
        while present > total and extra:
            session.delete(extra.pop(0))
            present -= 1
        for i in range(present, total):
            segment_service.create_segment(session, f"bench {i}", template(i), None)


#: What changed, as the benchmark's rows name it.
CHANGES: dict[str, Changes | None] = {
    "unknown (all segments)": None,
    "event Purchase": Changes(events={"Purchase"}),
    "attribute plan": Changes(attributes={"plan"}),
}


def mark_computed() -> None:
    """Every segment computed now (time-based ones are re-checked once stale)."""
    with operation_session() as session:
        session.execute(update(Segment).values(last_computed_at=datetime.now(UTC)))


def measure(ids: list[int], changes: Changes | None) -> tuple[list[float], list[float], int]:
    """Milliseconds per evaluation (first run, second run) and segments re-checked."""
    first, second, checked = [], [], 0
    for out in (first, second):
        for customer_id in ids:
            started = time.perf_counter()
            with operation_session() as session:
                done = evaluate_customers(session, [customer_id], datetime.now(UTC), changes)
            out.append((time.perf_counter() - started) * 1000)
            checked = max(checked, len(done.evaluated))
    return first, second, checked


def through_the_job(ids: list[int]) -> list[float]:
    """Milliseconds of ``drain_outbox()`` after a tracked plan change, per customer."""
    with operation_session() as session:
        stored = session.execute(
            select(Customer.id, Customer.external_id, Customer.attributes).where(
                Customer.id.in_(ids)
            )
        ).all()
    timings, rng = [], random.Random(11)
    for _, external_id, attributes in stored:
        plan = rng.choice([p for p in (*PLANS, "trial") if p != attributes.get("plan")])
        engage.identify(external_id, plan=plan)
        db.session.commit()
        started = time.perf_counter()
        drained, _ = drain_outbox()
        timings.append((time.perf_counter() - started) * 1000)
        if drained != 1:
            raise SystemExit(f"expected one evaluate row, drained {drained}")
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--segments", type=int, nargs="+", default=[10, 20, 50, 200])
    args = parser.parse_args()
    # Redis configured: a commit queues the drain for a worker, which we play here.
    app = create_app(POSTGRES_URL, ENGAGE_REDIS_URL=REDIS_URL)
    rows = []
    with app.app_context():
        size = db.session.scalar(select(func.max(Customer.id))) or 0
        if size == 0:
            raise SystemExit("no data: run benchmarks/bench_recompute.py first")
        engage.segments()  # makes sure the default segment exists
        rng = random.Random(7)
        for total in args.segments:
            set_segment_count(total)
            for change, changes in CHANGES.items():
                mark_computed()
                ids = rng.sample(range(1, size + 1), args.customers)
                first, second, checked = measure(ids, changes)
                for label, values in (("first (writes joins)", first), ("again", second)):
                    rows.append(
                        [
                            total,
                            change,
                            checked,
                            label,
                            statistics.median(values),
                            percentile(values, 99),
                            max(values),
                        ]
                    )
            mark_computed()
            timings = through_the_job(rng.sample(range(1, size + 1), args.customers))
            rows.append(
                [
                    total,
                    "plan via identify + evaluate job",
                    "-",
                    "drain_outbox()",
                    statistics.median(timings),
                    percentile(timings, 99),
                    max(timings),
                ]
            )
            print(f"{total} segments done", flush=True)
        set_segment_count(6)
    print(f"\n{size:,} customers, {args.customers} customers evaluated one at a time\n")
    headers = ["segments", "what changed", "re-checked", "run", "p50 (ms)", "p99 (ms)", "max (ms)"]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
