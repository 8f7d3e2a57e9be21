"""What happened after a send: sent, failed, skipped, opened, clicked, unsubscribed.

Outcomes are counted from the messages themselves (each marks its first open and
first click, :mod:`.engagement`), so they cost one grouped query whatever the
number of events:

* ``opened``: the email pixel was fetched or the in-app message read; ``clicked``:
  an email link or a push notification was clicked. Both count people and
  machines alike (what other tools call opens and clicks); ``machine_opened`` /
  ``machine_clicked`` count those that only machines opened or clicked (privacy
  proxies, scanners), so ``opened - machine_opened`` is a lower bound of people.
* ``unsubscribed_after``: sent to a customer who has since unsubscribed from the
  channel (and not come back).

A broadcast has one message per customer, so its counts are of customers; an
automation step counts distinct customers (a customer who re-entered counts once).
Rates are percentages (0-100) of the messages sent; ``click_to_open`` of those opened.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    case,
    cast,
    distinct,
    exists,
    extract,
    func,
    literal,
    literal_column,
    select,
)
from sqlalchemy.orm import Session

from ..models import Message, MessageStatus, Unsubscription

#: The measures of an outcome, in the order they are shown.
MEASURES = (
    "total",
    "queued",
    "sent",
    "failed",
    "skipped",
    "opened",
    "clicked",
    "machine_opened",
    "machine_clicked",
    "unsubscribed_after",
)
#: Longest chart of days after a send.
MAX_DAYS = 365


def _conditions() -> dict[str, ColumnElement[bool]]:
    """Each measure (but ``total``) as a condition on one message."""
    m = Message
    unsubscribed = exists().where(
        Unsubscription.customer_id == m.customer_id,
        Unsubscription.channel == m.channel,
        Unsubscription.created_at >= m.sent_at,
    )
    return {
        "queued": m.status == MessageStatus.QUEUED,
        "sent": m.status == MessageStatus.SENT,
        "failed": m.status == MessageStatus.FAILED,
        "skipped": m.status == MessageStatus.SKIPPED,
        "opened": m.opened_at.is_not(None)
        | m.machine_opened_at.is_not(None)
        | m.read_at.is_not(None),
        "clicked": m.clicked_at.is_not(None) | m.machine_clicked_at.is_not(None),
        "machine_opened": m.machine_opened_at.is_not(None)
        & m.opened_at.is_(None)
        & m.read_at.is_(None),
        "machine_clicked": m.machine_clicked_at.is_not(None) & m.clicked_at.is_(None),
        "unsubscribed_after": (m.status == MessageStatus.SENT) & unsubscribed,
    }


def _columns(unique: bool, measures: Sequence[str] = MEASURES) -> list[ColumnElement[Any]]:
    """One counting column per measure: of messages, or of distinct customers."""

    def counted(condition: ColumnElement[bool] | None, name: str) -> ColumnElement[Any]:
        value: Any = Message.customer_id if unique else literal(1)
        if condition is not None:
            value = case((condition, value))
        return (func.count(distinct(value)) if unique else func.count(value)).label(name)

    conditions = _conditions()
    return [counted(conditions.get(name), name) for name in measures]


def _percent(part: int, whole: int) -> float:
    return round(100 * part / whole, 1) if whole else 0.0


def with_rates(counts: dict[str, int]) -> dict[str, Any]:
    """``counts`` plus ``rates``: percentages of the messages sent (and of those opened)."""
    rate = _percent

    sent, opened = counts["sent"], counts["opened"]
    return {
        **counts,
        "rates": {
            "opened": rate(opened, sent),
            "clicked": rate(counts["clicked"], sent),
            "click_to_open": rate(counts["clicked"], opened),
            "machine_opened": rate(counts["machine_opened"], sent),
            "machine_clicked": rate(counts["machine_clicked"], sent),
            "unsubscribed_after": rate(counts["unsubscribed_after"], sent),
            "failed": rate(counts["failed"], counts["total"]),
        },
    }


def engagement_counts(session: Session, broadcast_id: int) -> dict[str, int]:
    """Every measure of one broadcast's messages (one per customer)."""
    row = session.execute(
        select(*_columns(unique=False)).where(Message.broadcast_id == broadcast_id)
    ).one()
    return {name: int(row._mapping[name] or 0) for name in MEASURES}


def broadcast_outcomes(session: Session, broadcast_id: int) -> dict[str, Any]:
    """A broadcast's outcomes with rates (what its admin page shows)."""
    return with_rates(engagement_counts(session, broadcast_id))


#: What an index page shows of each broadcast (no per-message unsubscribe lookup).
INDEX_MEASURES = ("sent", "opened", "clicked")


def rates_of_broadcasts(
    session: Session, broadcast_ids: Sequence[int]
) -> dict[int, dict[str, Any]]:
    """Sent, opened and clicked, with open and click rates, of several broadcasts in
    one query (an index page); a broadcast with no messages yet is left out."""
    if not broadcast_ids:
        return {}
    rows = session.execute(
        select(Message.broadcast_id, *_columns(unique=False, measures=INDEX_MEASURES))
        .where(Message.broadcast_id.in_(list(broadcast_ids)))
        .group_by(Message.broadcast_id)
    )
    found = {}
    for row in rows:
        sent, opened, clicked = (int(row._mapping[name] or 0) for name in INDEX_MEASURES)
        found[row.broadcast_id] = {
            "sent": sent,
            "opened": opened,
            "clicked": clicked,
            "rates": {"opened": _percent(opened, sent), "clicked": _percent(clicked, sent)},
        }
    return found


def step_outcomes(session: Session, automation_id: int) -> dict[int, dict[str, Any]]:
    """Outcomes of each send step of an automation (by its position in the program),
    counted in distinct customers, with rates."""
    rows = session.execute(
        select(Message.step, *_columns(unique=True))
        .where(Message.automation_id == automation_id, Message.step.is_not(None))
        .group_by(Message.step)
        .order_by(Message.step)
    )
    return {
        row.step: with_rates({name: int(row._mapping[name] or 0) for name in MEASURES})
        for row in rows
    }


def _days_after(session: Session, column: Any) -> ColumnElement[Any]:
    """Whole days from a message's ``sent_at`` to ``column`` (SQL, both databases)."""
    if session.get_bind().dialect.name == "postgresql":
        seconds = extract("epoch", column - Message.sent_at)
        return cast(func.floor(seconds / literal_column("86400")), Integer)
    return cast(func.julianday(column) - func.julianday(Message.sent_at), Integer)


#: Chart series -> the message columns whose first hits they count.
SERIES = {
    "opened": ("opened_at", "read_at"),
    "machine_opened": ("machine_opened_at",),
    "clicked": ("clicked_at",),
    "machine_clicked": ("machine_clicked_at",),
}


def engagement_by_day(
    session: Session,
    *,
    broadcast_id: int | None = None,
    automation_id: int | None = None,
    days: int = 7,
) -> list[dict[str, int]]:
    """First opens and clicks per day after each message was sent, for a chart.

    One point per day (``day`` 0 is the day of sending, counted from each message's
    ``sent_at``), each with ``opened`` and ``clicked`` (by people: pixel fetched,
    in-app message read, link clicked) and ``machine_opened`` / ``machine_clicked``.
    Each message counts once per series, on the day of its first hit.
    """
    days = max(1, min(int(days), MAX_DAYS))
    scope: Sequence[ColumnElement[bool]] = (
        [Message.broadcast_id == broadcast_id]
        if broadcast_id is not None
        else [Message.automation_id == automation_id]
    )
    points = [{"day": day, **dict.fromkeys(SERIES, 0)} for day in range(days)]
    for series, columns in SERIES.items():
        for name in columns:
            column = getattr(Message, name)
            day = _days_after(session, column)
            rows = session.execute(
                select(day, func.count())
                .where(*scope, column.is_not(None), Message.sent_at.is_not(None))
                .group_by(day)
            )
            for value, count in rows:
                value = max(int(value), 0)  # a hit stamped before the send: its day
                if value < days:
                    points[value][series] += count
    return points
