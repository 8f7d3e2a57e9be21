"""Demo data for ``flask engage seed-demo``: a fintech app's customers and events.

Customers and events are written in bulk (:func:`~flask_engage.tracking.write_customers`
and a Core ``executemany`` into ``engage_events``), then the seed segments, one
automation and one broadcast draft are created (computing their members) and the
segments that already existed are recomputed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import exists, func, select

from .db import operation_session
from .models import Automation, Broadcast, Customer, Event, Segment, utcnow
from .tracking import CustomerPatch, record_definitions, write_customers

#: Demo customers' external ids start with this prefix (never a host user's id).
PREFIX = "demo-"
CHUNK = 250
CITIES = (
    ("Lagos", 24),
    ("Nairobi", 14),
    ("Accra", 12),
    ("Cape Town", 10),
    ("London", 12),
    ("Berlin", 8),
    ("New York", 12),
    ("São Paulo", 8),
)
FIRST_NAMES = (
    "Ada",
    "Chidi",
    "Amara",
    "Tunde",
    "Zainab",
    "Kofi",
    "Wanjiru",
    "Thabo",
    "Emma",
    "Liam",
    "Sofia",
    "Lucas",
    "Mia",
    "Noah",
    "Ngozi",
    "Femi",
    "Yaw",
    "Aisha",
)
MERCHANTS = (
    "Jumia",
    "Uber",
    "Bolt",
    "Netflix",
    "Spotify",
    "Shoprite",
    "Amazon",
    "Chicken Republic",
    "Glovo",
    "Apple",
)

#: Event names and the types of their properties (recorded for the segment builder).
EVENT_PROPERTIES: dict[str, dict[str, str]] = {
    "Signed up": {},
    "Completed KYC": {"method": "string"},
    "Changed plan": {"from": "string", "to": "string"},
    "Logged in": {"device": "string"},
    "Purchase": {"amount": "number", "merchant": "string"},
    "Card used": {"amount": "number", "merchant": "string"},
}

SEGMENTS: list[tuple[str, dict[str, Any], str]] = [
    (
        "Customers in Lagos",
        {"attribute": "city", "op": "eq", "value": "Lagos"},
        "Everyone whose city is Lagos.",
    ),
    ("Pro plan", {"attribute": "plan", "op": "eq", "value": "pro"}, "Paying customers."),
    (
        "Pro in Lagos",
        {
            "all": [
                {"attribute": "plan", "op": "eq", "value": "pro"},
                {"attribute": "city", "op": "eq", "value": "Lagos"},
            ]
        },
        "Pro customers in Lagos.",
    ),
    (
        "Not logged in for 30 days",
        {"event": "Logged in", "window": {"last_days": 30}, "count": {"op": "eq", "value": 0}},
        "No login in the last 30 days.",
    ),
    (
        "Spent over $1,000 this month",
        {
            "event": "Purchase",
            "window": {"calendar": "this_month"},
            "sum": {"property": "amount", "op": "gt", "value": 1000},
        },
        "Purchases this calendar month add up to more than $1,000.",
    ),
    (
        "KYC pending after 3 days",
        {
            "all": [
                {"event": "Signed up", "window": {"older_than_days": 3}},
                {"event": "Completed KYC", "count": {"op": "eq", "value": 0}},
            ]
        },
        "Signed up more than 3 days ago and KYC not done.",
    ),
    (
        "Virtual card used more than 5 times this month",
        {
            "event": "Card used",
            "window": {"calendar": "this_month"},
            "count": {"op": "gt", "value": 5},
        },
        "Heavy card users this month.",
    ),
]

AUTOMATION = {
    "name": "KYC reminder",
    "trigger_segment": "kyc-pending-after-3-days",
    "steps": [
        {
            "send": {
                "channel": "email",
                "subject": "{{ customer.first_name }}, finish your KYC",
                "body": "Hi {{ customer.first_name }}, verify your identity in two minutes to "
                "unlock your virtual card.\n\nUnsubscribe: {{ unsubscribe_url }}",
            }
        },
        {"wait": {"days": 3}},
        {"if": {"event": "Completed KYC", "count": {"op": "eq", "value": 0}}},
        {"send": {"channel": "in_app", "body": "Your virtual card is waiting: complete KYC."}},
    ],
}

BROADCAST = {
    "name": "Pro in Lagos: card cashback week",
    "channel": "email",
    "segments": ["pro-in-lagos"],
    "subject": "5% cashback on your virtual card this week",
    "body": "Hi {{ customer.first_name }}, every card purchase in Lagos earns 5% back until "
    "Sunday.\n\nUnsubscribe: {{ unsubscribe_url }}",
}


@dataclass
class SeedResult:
    """What ``seed`` wrote."""

    customers: int
    events: int
    segments: list[Segment]
    skipped: bool = False


def is_seeded() -> bool:
    """True when demo customers exist already."""
    with operation_session() as session:
        return bool(session.scalar(select(exists().where(Customer.external_id.startswith(PREFIX)))))


def _customer(rng: random.Random, number: int, now: datetime) -> tuple[str, CustomerPatch, list]:
    """One customer and their events ``(name, properties, occurred_at)``, oldest first."""
    cities, weights = zip(*CITIES, strict=True)
    signed_up = now - timedelta(days=rng.uniform(0, 120), minutes=rng.uniform(0, 600))
    age_days = (now - signed_up).total_seconds() / 86400
    plan = "pro" if rng.random() < 0.25 else "free"
    first_name = rng.choice(FIRST_NAMES)
    events: list[tuple[str, dict[str, Any], datetime]] = [("Signed up", {}, signed_up)]
    kyc_done = age_days > 0.5 and rng.random() < (0.85 if age_days > 3 else 0.5)
    if kyc_done:
        at = signed_up + timedelta(hours=rng.uniform(0.2, min(age_days, 3) * 24))
        events.append(("Completed KYC", {"method": rng.choice(["BVN", "passport", "ID card"])}, at))
    if plan == "pro":
        at = signed_up + timedelta(days=rng.uniform(0, age_days))
        events.append(("Changed plan", {"from": "free", "to": "pro"}, at))
    # Activity: some customers churn (stop logging in) some time after signing up.
    churned = rng.random() < 0.3
    active_until = signed_up + timedelta(days=rng.uniform(0, age_days)) if churned else now
    logins_per_week = rng.choice((0.5, 1, 2, 3, 5))
    spend = rng.choice((0.3, 0.5, 1, 1, 3)) * (2 if plan == "pro" else 1)
    at = signed_up
    while True:
        at += timedelta(days=rng.expovariate(logins_per_week / 7))
        if at >= active_until:
            break
        events.append(("Logged in", {"device": rng.choice(["ios", "android", "web"])}, at))
        if kyc_done and rng.random() < 0.4:
            for _ in range(rng.randint(1, 2)):
                amount = round(min(rng.lognormvariate(3.3, 1.0) * spend, 4000), 2)
                merchant = rng.choice(MERCHANTS)
                moment = at + timedelta(minutes=rng.uniform(1, 90))
                if moment < now:
                    events.append(("Purchase", {"amount": amount, "merchant": merchant}, moment))
                    events.append(("Card used", {"merchant": merchant, "amount": amount}, moment))
    patch = CustomerPatch(
        email=f"{first_name.lower()}.{number}@example.com",
        attributes={
            "first_name": first_name,
            "plan": plan,
            "city": rng.choices(cities, weights)[0],
            "kyc_done": kyc_done,
        },
        created_at=signed_up,
    )
    return f"{PREFIX}{number}", patch, events


def _chunks(start: int, total: int) -> Iterator[range]:
    for low in range(start, start + total, CHUNK):
        yield range(low, min(low + CHUNK, start + total))


def seed(
    customers: int = 3000,
    *,
    seed_value: int = 7,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> SeedResult:
    """Write ``customers`` demo customers with a few months of events, then the seed
    segments, the KYC automation and a broadcast draft (those that do not exist yet)."""
    now = now or utcnow()
    rng = random.Random(seed_value)
    with operation_session() as session:
        start = 1 + (
            session.scalar(
                select(func.count())
                .select_from(Customer)
                .where(Customer.external_id.startswith(PREFIX))
            )
            or 0
        )
    written_events = 0
    for numbers in _chunks(start, customers):
        generated = [_customer(rng, n, now) for n in numbers]
        with operation_session() as session:
            conn = session.connection()
            ids = write_customers(conn, {key: patch for key, patch, _ in generated}, now)
            rows = [
                {"customer_id": ids[key], "name": name, "properties": props, "occurred_at": at}
                for key, _, events in generated
                for name, props, at in events
            ]
            conn.execute(Event.__table__.insert(), rows)  # executemany, no RETURNING
        written_events += len(rows)
        if progress is not None:
            progress(len(numbers))
    with operation_session() as session:
        conn = session.connection()
        record_definitions(conn, "event", "", {name: "event" for name in EVENT_PROPERTIES}, now)
        for name, properties in EVENT_PROPERTIES.items():
            record_definitions(conn, "property", name, properties, now)
    segments = _seed_definitions()
    return SeedResult(customers=customers, events=written_events, segments=segments)


def _seed_definitions() -> list[Segment]:
    """Create the seed segments, automation and broadcast draft that are missing; recompute."""
    engage = current_app.extensions["engage"]
    with operation_session() as session:
        existing = dict(session.execute(select(Segment.name, Segment.id)).all())
    for name, filters, description in SEGMENTS:
        if name not in existing:
            existing[name] = engage.create_segment(name, filters, description=description).id
        # Now, in this process (with Redis, create_segment only queues it): members are
        # in before the automation exists, so seeding sends nobody a message.
        engage.recompute(existing[name])
    with operation_session() as session:
        has_automation = session.scalar(
            select(exists().where(Automation.name == AUTOMATION["name"]))
        )
        has_broadcast = session.scalar(select(exists().where(Broadcast.name == BROADCAST["name"])))
    if not has_automation:
        engage.create_automation(
            AUTOMATION["name"],
            trigger={"joins": AUTOMATION["trigger_segment"]},
            steps=AUTOMATION["steps"],
        )
    if not has_broadcast:
        engage.create_broadcast(**BROADCAST)
    engage.recompute("all")
    with operation_session() as session:
        names = [name for name, _, _ in SEGMENTS]
        return list(session.scalars(select(Segment).where(Segment.name.in_(names))))
