"""Full recompute of the five DESIGN.md example segments on PostgreSQL.

Loads N customers with 20 events each (INSERT ... SELECT generate_series), then
for each size reports: engage.recompute (first run, everyone joins; then, median of
3, with no change), the compiled count vs a hand-written SQL count (the floor, median
of 3), a naive per-customer Python evaluation measured on a sample and
extrapolated, and peak Python memory.
Usage: python benchmarks/bench_recompute.py [--sizes 10000 100000] [--big]
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

from common import POSTGRES_URL, ensure_database, reset_schema, table, timed
from sqlalchemy import func, select, text

from flask_engage.db import operation_session
from flask_engage.models import Customer, Event, Segment
from flask_engage.segments import service as segment_service
from flask_engage.segments.compiler import calendar_bounds
from flask_engage.segments.membership import make_compiler
from tests.hostapp import create_app, db, engage

SEGMENTS = {
    "Pro in Lagos": {
        "all": [
            {"attribute": "plan", "op": "eq", "value": "pro"},
            {"attribute": "city", "op": "eq", "value": "Lagos"},
        ]
    },
    "Not logged in for 30 days": {
        "event": "Logged in",
        "window": {"last_days": 30},
        "count": {"op": "eq", "value": 0},
    },
    "Spent over 1000 this month": {
        "event": "Purchase",
        "window": {"calendar": "this_month"},
        "sum": {"property": "amount", "op": "gt", "value": 1000},
    },
    "Signed up 3 days ago, no KYC": {
        "all": [
            {"event": "Signed up", "window": {"older_than_days": 3}},
            {"event": "Completed KYC", "count": {"op": "eq", "value": 0}},
        ]
    },
    "Card used 5+ this month": {
        "event": "Card used",
        "window": {"calendar": "this_month"},
        "count": {"op": "gt", "value": 5},
    },
}

HAND_SQL = {
    "Pro in Lagos": """SELECT count(*) FROM engage_customers
        WHERE attributes->>'plan' = 'pro' AND attributes->>'city' = 'Lagos'""",
    "Not logged in for 30 days": """SELECT count(*) FROM engage_customers c WHERE NOT EXISTS (
        SELECT 1 FROM engage_events e WHERE e.customer_id = c.id AND e.name = 'Logged in'
        AND e.occurred_at >= CAST(:now AS timestamptz) - interval '30 days')""",
    "Spent over 1000 this month": """SELECT count(*) FROM (SELECT customer_id FROM engage_events
        WHERE name = 'Purchase' AND occurred_at >= :month_start AND occurred_at < :month_end
        GROUP BY customer_id HAVING sum((properties->>'amount')::float) > 1000) t""",
    "Signed up 3 days ago, no KYC": """SELECT count(*) FROM engage_customers c
        WHERE EXISTS (SELECT 1 FROM engage_events e WHERE e.customer_id = c.id
                      AND e.name = 'Signed up'
                      AND e.occurred_at < CAST(:now AS timestamptz) - interval '3 days')
        AND NOT EXISTS (SELECT 1 FROM engage_events e WHERE e.customer_id = c.id
                        AND e.name = 'Completed KYC')""",
    "Card used 5+ this month": """SELECT count(*) FROM (SELECT customer_id FROM engage_events
        WHERE name = 'Card used' AND occurred_at >= :month_start AND occurred_at < :month_end
        GROUP BY customer_id HAVING count(*) > 5) t""",
}

LOAD_CUSTOMERS = """
INSERT INTO engage_customers (id, external_id, email, attributes, created_at, updated_at)
SELECT g, g::text, 'c' || g || '@example.com',
       jsonb_build_object('plan', (ARRAY['free', 'pro', 'team'])[1 + g % 3],
                          'city', (ARRAY['Lagos', 'Accra', 'Nairobi', 'Cairo'])[1 + g % 4]),
       CAST(:now AS timestamptz) - interval '100 days', :now
FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) g
"""
# 20 events per customer: "Signed up" 0-9 days ago, KYC for half of them, then a mix
# of logins, purchases and card uses; every 5th customer has not logged in for 30 days.
LOAD_EVENTS = """
INSERT INTO engage_events (customer_id, name, properties, occurred_at)
SELECT c, kind.name,
       CASE WHEN kind.name = 'Purchase'
            THEN jsonb_build_object('amount', 10 + (c * 7 + k * 13) % 490) ELSE '{}'::jsonb END,
       CAST(:now AS timestamptz) - CASE
                   WHEN kind.name = 'Signed up' THEN interval '1 day' * (c % 10)
                   WHEN kind.name = 'Logged in' AND c % 5 = 0
                        THEN interval '1 hour' * (24 * 31 + (c * 31 + k * 17) % (24 * 60))
                   ELSE interval '1 hour' * ((c * 31 + k * 17) % (24 * 90)) END
FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) c
CROSS JOIN generate_series(0, 19) k
CROSS JOIN LATERAL (SELECT CASE
    WHEN k = 0 THEN 'Signed up'
    WHEN k = 1 THEN CASE WHEN c % 2 = 0 THEN 'Completed KYC' ELSE 'Logged in' END
    WHEN (c + k) % 10 < 5 THEN 'Logged in'
    WHEN (c + k) % 10 < 7 THEN 'Purchase'
    ELSE 'Card used' END AS name) kind
"""


def load(app: Any, size: int, now: datetime) -> float:
    """Fresh schema with ``size`` customers and 20 events each; returns seconds."""
    started = time.perf_counter()
    reset_schema(db.engine)
    db.create_all()
    engage.create_all()
    with db.engine.begin() as conn:
        for first in range(1, size + 1, 50_000):
            params = {"now": now, "first": first, "last": min(size, first + 49_999)}
            conn.execute(text(LOAD_CUSTOMERS), params)
            conn.execute(text(LOAD_EVENTS), params)
        conn.execute(
            text("SELECT setval(pg_get_serial_sequence('engage_customers', 'id'), :n)"), {"n": size}
        )
        conn.execute(
            text("""INSERT INTO engage_definitions (kind, scope, name, type, first_seen, last_seen)
            VALUES ('attribute', '', 'plan', 'string', :now, :now),
                   ('attribute', '', 'city', 'string', :now, :now),
                   ('property', 'Purchase', 'amount', 'number', :now, :now)"""),
            {"now": now},
        )
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    return time.perf_counter() - started


def create_segments() -> list[Segment]:
    """The five example segments, saved without computing them."""
    with operation_session() as session:
        return [
            segment_service.create_segment(session, name, filters, None)
            for name, filters in SEGMENTS.items()
        ]


def naive_matches(
    name: str,
    attrs: dict[str, Any],
    events: list[Any],
    now: datetime,
    month: tuple[datetime, datetime],
) -> bool:
    """The five segments evaluated in Python for one customer (the naive baseline)."""
    if name == "Pro in Lagos":
        return attrs.get("plan") == "pro" and attrs.get("city") == "Lagos"
    if name == "Not logged in for 30 days":
        return not any(
            e.name == "Logged in" and e.occurred_at >= now - timedelta(days=30) for e in events
        )
    in_month = [e for e in events if month[0] <= e.occurred_at < month[1]]
    if name == "Spent over 1000 this month":
        return sum(e.properties.get("amount", 0) for e in in_month if e.name == "Purchase") > 1000
    if name == "Signed up 3 days ago, no KYC":
        return any(
            e.name == "Signed up" and e.occurred_at < now - timedelta(days=3) for e in events
        ) and not any(e.name == "Completed KYC" for e in events)
    return sum(e.name == "Card used" for e in in_month) > 5


def naive(size: int, sample: int, now: datetime) -> tuple[float, dict[str, int], float]:
    """Per-customer evaluation (load the customer, then its events) on a sample.

    Returns seconds extrapolated to ``size``, matches in the sample, peak MiB.
    """
    month = calendar_bounds("this_month", now, engage_zone())
    step = max(1, size // sample)
    found = dict.fromkeys(SEGMENTS, 0)
    tracemalloc.start()
    started = time.perf_counter()
    with operation_session() as session:
        for customer_id in range(1, size + 1, step)[:sample]:
            customer = session.get(Customer, customer_id)
            events = session.scalars(select(Event).where(Event.customer_id == customer_id)).all()
            for name in SEGMENTS:
                found[name] += naive_matches(name, customer.attributes, events, now, month)
            session.expunge_all()
    took = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return took * size / min(sample, len(range(1, size + 1, step))), found, peak


def engage_zone() -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo("UTC")


def explain(filters: dict[str, Any], now: datetime) -> str:
    """EXPLAIN ANALYZE of the compiled count query."""
    with operation_session() as session:
        compiler = make_compiler(session, now)
        query = (
            select(func.count()).select_from(Customer.__table__).where(compiler.condition(filters))
        )
        compiled = query.compile(dialect=session.get_bind().dialect)
        conn = session.connection()
        rows = conn.exec_driver_sql(
            "EXPLAIN (ANALYZE, COSTS OFF) " + compiled.string, compiled.params
        )
        return "\n".join(row[0] for row in rows)


def run(size: int, sample: int) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    app = create_app(POSTGRES_URL)
    with app.app_context():
        loaded = load(app, size, now)
        events = db.session.scalar(select(func.count()).select_from(Event))
        print(f"\n## {size:,} customers, {events:,} events (loaded in {loaded:.1f} s)\n")
        segments = create_segments()
        month_start, month_end = calendar_bounds("this_month", now, engage_zone())
        params = {"now": now, "month_start": month_start, "month_end": month_end}
        rows = []
        total_cold = 0.0
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        for segment in segments:
            started = time.perf_counter()
            engage.recompute(segment, now=now)
            cold = time.perf_counter() - started
            total_cold += cold
            warm, _ = timed(lambda s=segment: engage.recompute(s, now=now))
            compiled, count = timed(lambda s=segment: engage.count(s.filters, now=now))
            hand, hand_count = timed(
                lambda s=segment: db.session.scalar(text(HAND_SQL[s.name]), params)
            )
            assert count == hand_count, (segment.name, count, hand_count)
            rows.append(
                [segment.name, count, cold, warm, compiled, hand, compiled / hand, warm / hand]
            )
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
        print(
            table(
                [
                    "segment",
                    "members",
                    "recompute 1st (s)",
                    "recompute 2nd (s)",
                    "compiled count (s)",
                    "hand SQL count (s)",
                    "compiled / hand",
                    "recompute 2nd / hand",
                ],
                rows,
            )
        )
        naive_s, found, naive_peak = naive(size, sample, now)
        print()
        print(
            table(
                ["5 segments", "seconds", "peak Python MiB", "naive / compiler"],
                [
                    ["engage.recompute (first run, all join)", total_cold, peak, 1.0],
                    [
                        f"naive per customer (sample {sample:,}, extrapolated)",
                        naive_s,
                        naive_peak,
                        naive_s / total_cold,
                    ],
                ],
            )
        )
        print(f"\nmaxrss growth during recompute: {rss:.1f} MiB")
        worst = max(rows, key=lambda r: r[-1])
        print(f"\nEXPLAIN ANALYZE of the compiled count with the worst ratio ({worst[0]}):\n")
        print(explain(SEGMENTS[worst[0]], now))
        db.session.remove()
        db.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--big", action="store_true", help="also run 1,000,000 customers")
    parser.add_argument("--sample", type=int, default=2_000)
    args = parser.parse_args()
    ensure_database()
    for size in args.sizes + ([1_000_000] if args.big else []):
        run(size, args.sample)


if __name__ == "__main__":
    main()
