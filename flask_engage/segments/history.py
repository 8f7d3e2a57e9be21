"""Segment size over time: daily snapshots, and history rebuilt for days without one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..db import insert_ignoring_conflicts
from ..models import Customer, Membership, Segment, SegmentSnapshot
from .membership import make_compiler


@dataclass
class HistoryPoint:
    """One day of a segment's history. ``percent`` is 0-100 of all customers."""

    date: date
    members: int
    total: int
    percent: float

    def __getitem__(self, key: str) -> object:  # points read like dicts too
        return getattr(self, key)


def _zone() -> ZoneInfo:
    return ZoneInfo(current_app.config["ENGAGE_TIMEZONE"])


def local_day(now: datetime) -> date:
    """The calendar day of ``now`` in ``ENGAGE_TIMEZONE``."""
    return now.astimezone(_zone()).date()


def end_of_day(day: date) -> datetime:
    """The last moment of a local day (just before the next midnight)."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=_zone()) - timedelta(
        microseconds=1
    )


def _percent(members: int, total: int) -> float:
    return round(100.0 * members / total, 2) if total else 0.0


def _population(session: Session, as_of: datetime | None = None) -> int:
    """Customers segments are evaluated over (not those kept after the host deleted
    them), created by ``as_of`` when given: the ``total`` a percentage is of."""
    query = select(func.count()).where(Customer.deleted_at.is_(None))
    if as_of is not None:
        query = query.where(Customer.created_at <= as_of)
    return session.scalar(query) or 0


def take_snapshots(session: Session, now: datetime) -> int:
    """Record today's size of every segment (idempotent: one row per segment and day)."""
    day = local_day(now)
    total = _population(session)
    rows = session.execute(
        select(Segment.id, func.count(Membership.customer_id))
        .outerjoin(Membership, Membership.segment_id == Segment.id)
        .group_by(Segment.id)
    ).all()
    if rows:
        session.execute(
            insert_ignoring_conflicts(session, SegmentSnapshot.__table__, ["segment_id", "day"]),
            [
                {"segment_id": seg_id, "day": day, "members": members, "total": total}
                for seg_id, members in rows
            ],
        )
    return len(rows)


def segment_history(
    session: Session, segment: Segment, days: int, now: datetime
) -> list[HistoryPoint]:
    """One point per day, oldest first; the last point is today's live value.

    Days with no snapshot are rebuilt from the data as it stood at the end of that
    day (events up to then, customers created by then, current attributes) and
    stored, so each past day is computed once.
    """
    today = local_day(now)
    first = today - timedelta(days=days - 1)
    stored = {
        snap.day: snap
        for snap in session.scalars(
            select(SegmentSnapshot).where(
                SegmentSnapshot.segment_id == segment.id,
                SegmentSnapshot.day >= first,
                SegmentSnapshot.day < today,
            )
        )
    }
    points: list[HistoryPoint] = []
    rebuilt = []
    for offset in range(days - 1):
        day = first + timedelta(days=offset)
        snap = stored.get(day)
        if snap is None:
            as_of = end_of_day(day)
            compiler = make_compiler(session, as_of, as_of=True)
            members = (
                session.scalar(
                    select(func.count()).select_from(compiler.query(segment.filters).subquery())
                )
                or 0
            )
            total = _population(session, as_of)
            rebuilt.append(
                {"segment_id": segment.id, "day": day, "members": members, "total": total}
            )
        else:
            members, total = snap.members, snap.total
        points.append(HistoryPoint(day, members, total, _percent(members, total)))
    if rebuilt:
        session.execute(
            insert_ignoring_conflicts(session, SegmentSnapshot.__table__, ["segment_id", "day"]),
            rebuilt,
        )
    members = session.scalar(select(func.count()).where(Membership.segment_id == segment.id)) or 0
    total = _population(session)
    points.append(HistoryPoint(today, members, total, _percent(members, total)))
    return points
