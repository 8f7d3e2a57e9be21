"""Who is on a list: subscriptions written set-based, the members, counts over time.

Every write takes many customers at once (an import is the same code as one
``add_to_list``) and works in the given session's transaction. A member who becomes
``subscribed`` is a ``joined`` change, one who stops being subscribed (unsubscribes,
or is removed while subscribed) a ``left`` change, in ``engage_list_changes``; the
same transaction starts the automations those changes trigger
(:func:`~flask_engage.automations.runs.start_list_runs`, then a ``deliver`` outbox
row has their first steps walked after the commit) and asks for the customers'
segments to be re-evaluated, since filters can name lists.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Select, case, delete, func, insert, or_, select, update
from sqlalchemy.orm import Query, Session

from ..automations.runs import start_list_runs
from ..changes import Changes
from ..db import insert_ignoring_conflicts
from ..models import (
    ChangeKind,
    Customer,
    CustomerList,
    ListChange,
    ListMember,
    ListMemberStatus,
    OutboxTask,
    utcnow,
)
from ..outbox import add_to_outbox
from ..segments.history import end_of_day, local_day
from ..tracking import CustomerPatch, write_customers

members_table = ListMember.__table__
changes_table = ListChange.__table__
#: Customers written per statement (bound parameters stay well below the databases' caps).
CHUNK = 500

SUBSCRIBED = ListMemberStatus.SUBSCRIBED.value
PENDING = ListMemberStatus.PENDING.value
UNSUBSCRIBED = ListMemberStatus.UNSUBSCRIBED.value

T = TypeVar("T")


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def ensure_customers(
    session: Session, patches: Mapping[str, CustomerPatch], now: datetime | None = None
) -> dict[str, int]:
    """Engage ids of these host ids; unknown customers are created with their patch
    (and evaluated for segments), known ones are left as they are."""
    keys = list(patches)
    conn = session.connection()
    known: set[str] = set()
    for chunk in _chunks(keys):
        known.update(
            conn.scalars(select(Customer.external_id).where(Customer.external_id.in_(chunk)))
        )
    fresh = {key: patches[key] for key in keys if key not in known}
    ids = write_customers(
        conn, {**dict.fromkeys(known, CustomerPatch(restore=False)), **fresh}, now
    )
    add_to_outbox(session, OutboxTask.EVALUATE, [ids[key] for key in fresh])
    return ids


def _record(
    session: Session,
    list_id: int,
    joined: Iterable[int],
    left: Iterable[int],
    now: datetime,
    evaluate: bool = True,
) -> None:
    """Write the changes, start the automations they trigger, re-evaluate the customers
    (unless the caller does: ``evaluate=False``)."""
    rows = [
        {"list_id": list_id, "customer_id": customer_id, "kind": kind, "at": now}
        for kind, ids in ((ChangeKind.JOINED.value, joined), (ChangeKind.LEFT.value, left))
        for customer_id in ids
    ]
    if not rows:
        return
    computation = uuid.uuid4().hex
    session.execute(insert(changes_table), [{**row, "computation": computation} for row in rows])
    if start_list_runs(session, computation, now):
        # the runs' first steps are due: after the commit, walk them (and send)
        add_to_outbox(session, OutboxTask.DELIVER, [0])
    if evaluate:
        customers = [row["customer_id"] for row in rows]
        add_to_outbox(session, OutboxTask.EVALUATE, customers, changes=Changes(lists=True))


def _add_members(session: Session) -> Any:
    """``INSERT`` of member rows that skips customers already on the list (run with one
    parameter set per row: the statement is compiled once and cached)."""
    return insert_ignoring_conflicts(
        session.connection(), members_table, ["list_id", "customer_id"]
    )


def _member(list_id: int, customer_id: int, status: str, now: datetime) -> dict[str, Any]:
    """A new member row."""
    return {
        "list_id": list_id,
        "customer_id": customer_id,
        "status": status,
        "created_at": now,
        "updated_at": now,
        "subscribed_at": now if status == SUBSCRIBED else None,
        "unsubscribed_at": now if status == UNSUBSCRIBED else None,
    }


def subscribe(
    session: Session,
    list_id: int,
    customer_ids: Iterable[int],
    now: datetime | None = None,
    *,
    resubscribe: bool = True,
    evaluate: bool = True,
) -> list[int]:
    """Make customers subscribed members; returns those who were not before.

    Pending members are confirmed; members who unsubscribed are subscribed again
    only when ``resubscribe`` (an import leaves them out). Idempotent.
    ``evaluate=False``: the caller re-evaluates these customers' segments itself.
    """
    now = now or utcnow()
    ids = list(dict.fromkeys(customer_ids))
    movable = [PENDING, UNSUBSCRIBED] if resubscribe else [PENDING]
    joined: list[int] = []
    for chunk in _chunks(ids):
        joined += session.scalars(
            update(members_table)
            .where(
                members_table.c.list_id == list_id,
                members_table.c.customer_id.in_(chunk),
                members_table.c.status.in_(movable),
            )
            .values(status=SUBSCRIBED, subscribed_at=now, unsubscribed_at=None, updated_at=now)
            .returning(members_table.c.customer_id)
        ).all()
        joined += session.scalars(
            _add_members(session).returning(members_table.c.customer_id),
            [_member(list_id, customer_id, SUBSCRIBED, now) for customer_id in chunk],
        ).all()
    _record(session, list_id, joined, (), now, evaluate)
    return joined


def unsubscribe(
    session: Session, list_id: int, customer_ids: Iterable[int], now: datetime | None = None
) -> list[int]:
    """Mark customers as unsubscribed from the list (kept as members that opted out, so
    an import does not add them back); returns those who were subscribed. Their channel
    subscriptions stay as they are. Idempotent."""
    now = now or utcnow()
    ids = list(dict.fromkeys(customer_ids))
    left: list[int] = []
    for chunk in _chunks(ids):
        of_chunk = (members_table.c.list_id == list_id, members_table.c.customer_id.in_(chunk))
        left += session.scalars(
            update(members_table)
            .where(*of_chunk, members_table.c.status == SUBSCRIBED)
            .values(status=UNSUBSCRIBED, unsubscribed_at=now, updated_at=now)
            .returning(members_table.c.customer_id)
        ).all()
        session.execute(
            update(members_table)
            .where(*of_chunk, members_table.c.status == PENDING)
            .values(status=UNSUBSCRIBED, unsubscribed_at=now, updated_at=now)
        )
        session.execute(
            _add_members(session),
            [_member(list_id, customer_id, UNSUBSCRIBED, now) for customer_id in chunk],
        )
    _record(session, list_id, (), left, now)
    return left


def remove(
    session: Session, list_id: int, customer_ids: Iterable[int], now: datetime | None = None
) -> int:
    """Take customers off the list, whatever their status; returns how many were on it.
    Idempotent."""
    now = now or utcnow()
    ids = list(dict.fromkeys(customer_ids))
    removed, left = 0, []
    for chunk in _chunks(ids):
        rows = session.execute(
            delete(members_table)
            .where(members_table.c.list_id == list_id, members_table.c.customer_id.in_(chunk))
            .returning(members_table.c.customer_id, members_table.c.status)
        ).all()
        removed += len(rows)
        left += [customer_id for customer_id, status in rows if status == SUBSCRIBED]
    _record(session, list_id, (), left, now)
    return removed


def subscribed(list_ids: Sequence[int]) -> Select[tuple[int]]:
    """``SELECT customer_id`` of the subscribed members of these lists (for ``IN``)."""
    return select(members_table.c.customer_id).where(
        members_table.c.list_id.in_(list_ids), members_table.c.status == SUBSCRIBED
    )


def members(session: Session, found: CustomerList) -> Query[Customer]:
    """A query of the list's subscribed customers, ordered by id (customers whose host
    row was deleted, ``on_delete="keep"``, are left out: they receive nothing)."""
    return (
        session.query(Customer)
        .filter(Customer.id.in_(subscribed([found.id])), Customer.deleted_at.is_(None))
        .order_by(Customer.id)
    )


def status_counts(session: Session, found: CustomerList) -> dict[str, int]:
    """Members per status (``subscribed``, ``pending``, ``unsubscribed``)."""
    counted = dict.fromkeys(ListMemberStatus, 0)
    for status, n in session.execute(
        select(ListMember.status, func.count())
        .where(ListMember.list_id == found.id)
        .group_by(ListMember.status)
    ):
        counted[ListMemberStatus(status)] = n
    return {status.value: n for status, n in counted.items()}


@dataclass(frozen=True)
class MemberRow:
    """One member as the admin lists them (``customer_id`` is the host's id and
    ``engage_id`` Engage's; None for a pending sign-up of someone who is not a
    customer yet)."""

    id: int
    customer_id: str | None
    email: str | None
    status: str
    subscribed_at: datetime | None
    unsubscribed_at: datetime | None
    created_at: datetime
    engage_id: int | None = None


@dataclass(frozen=True)
class MemberPage:
    """A page of members, oldest first; ``next_after`` continues it (None: the end)."""

    rows: list[MemberRow]
    next_after: int | None


def member_page(
    session: Session,
    found: CustomerList,
    *,
    search: str | None = None,
    status: str | None = None,
    after: int | None = None,
    limit: int = 50,
) -> MemberPage:
    """Members with keyset paging (``after`` a member id), optionally only one
    ``status``, or those whose host id or email contains ``search`` (any case)."""
    email = func.coalesce(Customer.email, ListMember.email)
    query = (
        select(ListMember, Customer.external_id, email)
        .outerjoin(Customer, Customer.id == ListMember.customer_id)
        .where(ListMember.list_id == found.id)
        .order_by(ListMember.id)
        .limit(limit + 1)
    )
    if status is not None:
        query = query.where(ListMember.status == ListMemberStatus(status).value)
    if after is not None:
        query = query.where(ListMember.id > after)
    if search:
        pattern = (
            "%" + search.lower().replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"
        )
        query = query.where(
            or_(
                func.lower(email).like(pattern, escape="\\"),
                func.lower(Customer.external_id).like(pattern, escape="\\"),
            )
        )
    found_rows = session.execute(query).all()
    rows = [
        MemberRow(
            member.id,
            external_id,
            address,
            member.status,
            member.subscribed_at,
            member.unsubscribed_at,
            member.created_at,
            member.customer_id,
        )
        for member, external_id, address in found_rows[:limit]
    ]
    return MemberPage(rows, rows[-1].id if len(found_rows) > limit else None)


@dataclass(frozen=True)
class ListPoint:
    """A list's subscribed members at the end of one day (``ENGAGE_TIMEZONE``)."""

    date: date
    subscribers: int

    def __getitem__(self, key: str) -> object:  # points read like dicts too
        return getattr(self, key)


def history(session: Session, found: CustomerList, days: int, now: datetime) -> list[ListPoint]:
    """One point per day, oldest first, from the subscription history; the last point
    is now. Each member's changes alternate joined/left, so a day's count is the
    number of joins up to its end minus the leaves."""
    today = local_day(now)
    first = today - timedelta(days=days - 1)
    delta = func.coalesce(
        func.sum(case((ListChange.kind == ChangeKind.JOINED.value, 1), else_=-1)), 0
    )
    of_list = ListChange.list_id == found.id
    start = end_of_day(first - timedelta(days=1))
    count = session.scalar(select(delta).where(of_list, ListChange.at <= start)) or 0
    points = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        until = now if day == today else end_of_day(day)
        count += (
            session.scalar(
                select(delta).where(of_list, ListChange.at > start, ListChange.at <= until)
            )
            or 0
        )
        start = until
        points.append(ListPoint(day, count))
    return points


def change_counts(
    session: Session, list_ids: Sequence[int], since: datetime
) -> dict[int, tuple[int, int]]:
    """Members who joined (became subscribed) and left each list since ``since``:
    ``{list_id: (joined, left)}`` (lists without changes are left out)."""
    if not list_ids:
        return {}
    joined = func.sum(case((ListChange.kind == ChangeKind.JOINED.value, 1), else_=0))
    left = func.sum(case((ListChange.kind == ChangeKind.LEFT.value, 1), else_=0))
    rows = session.execute(
        select(ListChange.list_id, joined, left)
        .where(ListChange.list_id.in_(list_ids), ListChange.at >= since)
        .group_by(ListChange.list_id)
    )
    return {list_id: (int(j or 0), int(lf or 0)) for list_id, j, lf in rows}


def subscriptions_of(session: Session, customer_id: int) -> list[tuple[CustomerList, str]]:
    """The lists a customer (Engage's id) is on, with their status, by list name."""
    rows = session.execute(
        select(CustomerList, ListMember.status)
        .join(ListMember, ListMember.list_id == CustomerList.id)
        .where(ListMember.customer_id == customer_id)
        .order_by(CustomerList.name)
    )
    return [(found, status) for found, status in rows]
