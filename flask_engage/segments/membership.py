"""Membership that maintains itself: full recomputes and incremental evaluation.

Both end the same way: the changes of one *computation* are written to
``engage_membership_changes`` and :func:`apply_computation` turns them into
memberships (one INSERT ... SELECT and one DELETE). The caller, in the same
transaction, starts what the changes trigger (automation runs) from the
computation id; signals fire only after that transaction commits
(:func:`send_signals`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from flask import current_app
from sqlalchemy import (
    Insert,
    Select,
    Text,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.orm import Session

from .. import signals
from ..changes import ANYTHING, Changes
from ..db import get_state, log, rowcount, this_app
from ..models import (
    AttributeDefinition,
    ChangeKind,
    Customer,
    Membership,
    MembershipChange,
    Segment,
    utcnow,
)
from .compiler import Compiler, customers, read_filter
from .nodes import Node, walk

change_rows = MembershipChange.__table__
memberships = Membership.__table__
segments_table = Segment.__table__


@dataclass
class Outcome:
    """What one evaluation changed."""

    segment: str
    joined: int
    left: int
    took_ms: int
    computation: str | None = None
    error: str | None = None


def _read_types(session: Session) -> dict[str, str]:
    """Recorded attribute types (name -> type)."""
    return dict(
        session.execute(
            select(AttributeDefinition.name, AttributeDefinition.type).where(
                AttributeDefinition.kind == "attribute"
            )
        ).all()
    )


def _read_filters(
    session: Session, replaced: Mapping[int, dict[str, Any]] | None = None
) -> dict[Any, dict[str, Any]]:
    """Every segment's filters by id, slug and id as text."""
    by_id: dict[Any, dict[str, Any]] = {}
    for seg_id, slug, filters in session.execute(select(Segment.id, Segment.slug, Segment.filters)):
        filters = (replaced or {}).get(seg_id, filters)
        by_id[seg_id] = by_id[slug] = by_id[str(seg_id)] = filters
    return by_id


def make_compiler(
    session: Session,
    now: datetime,
    customer_ids: Sequence[int] | None = None,
    as_of: bool = False,
    replaced: Mapping[int, dict[str, Any]] | None = None,
) -> Compiler:
    """A compiler wired to this database: dialect, recorded types, segment lookup.

    ``replaced``: segment id -> filters to use instead of the stored ones (what an
    edit would do to the segments that refer to it)."""
    return Compiler(
        session.get_bind().dialect.name,
        now,
        current_app.config["ENGAGE_TIMEZONE"],
        _read_types(session),
        _read_filters(session, replaced).get,
        customer_ids,
        as_of,
    )


_K = TypeVar("_K")
_V = TypeVar("_V")


class _Lazy(Mapping[_K, _V]):
    """A mapping read by ``load`` on first use (``loaded`` says whether it was)."""

    def __init__(self, load: Callable[[], dict[_K, _V]]) -> None:
        self._load: Callable[[], dict[_K, _V]] | None = load
        self._data: dict[_K, _V] = {}

    @property
    def loaded(self) -> dict[_K, _V] | None:
        """What was read, or None if nothing asked."""
        return None if self._load is not None else self._data

    def _loaded(self) -> dict[_K, _V]:
        if self._load is not None:
            self._data, self._load = self._load(), None
        return self._data

    def __getitem__(self, key: _K) -> _V:
        return self._loaded()[key]

    def __iter__(self) -> Iterator[_K]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())


#: Diff statements a process keeps (one per segment recomputed).
_DIFFS = 1024


@dataclass
class _Diff:
    """A segment's diff statement, built once and run again while what it was built
    from holds: the segment's filters, and what compiling them read (the recorded
    types, the other segments' filters), each None when compiling did not read it.
    ``now`` and the computation are parameters (``compiler.params``)."""

    filters: Any
    timezone: str
    types: dict[str, str] | None
    segments: dict[Any, dict[str, Any]] | None
    compiler: Compiler
    statement: Insert

    def still_valid(
        self, session: Session, filters: Any, timezone: str, read_types: Callable[[], Any]
    ) -> bool:
        return (
            self.filters == filters
            and self.timezone == timezone
            and (self.types is None or self.types == read_types())
            and (self.segments is None or self.segments == _read_filters(session))
        )


def _diff_for(
    session: Session, segment: Segment, now: datetime, types: dict[str, str] | None = None
) -> _Diff:
    """The segment's diff statement: cached, or built now. The recorded types (unless
    given) and the other segments' filters are read only when its filters need them
    (a filter without attribute conditions or references costs no query), and, for a
    cached statement, read again to check it still holds."""
    dialect = session.get_bind().dialect.name
    timezone = current_app.config["ENGAGE_TIMEZONE"]
    cache: dict[int, _Diff] = get_state().recompute_statements
    cached = cache.get(segment.id)

    def read_types() -> dict[str, str]:
        return types if types is not None else _read_types(session)

    if cached is not None and cached.still_valid(session, segment.filters, timezone, read_types):
        return cached
    recorded: _Lazy[str, str] = _Lazy(read_types)
    segments: _Lazy[Any, dict[str, Any]] = _Lazy(lambda: _read_filters(session))
    compiler = Compiler(dialect, now, timezone, recorded, segments.get)
    statement = _diff_statement(dialect, segment.id, compiler.query(segment.filters))
    diff = _Diff(segment.filters, timezone, recorded.loaded, segments.loaded, compiler, statement)
    # Built: keep what was read, not the loaders (they hold this session).
    compiler.attribute_types = recorded.loaded or {}
    compiler.segment_filters = (segments.loaded or {}).get
    if len(cache) >= _DIFFS:
        cache.clear()
    cache[segment.id] = diff
    return diff


def lock_segment(session: Session, segment_id: int) -> tuple[Segment, dict[str, str]] | None:
    """The segment, loaded and locked (``FOR UPDATE`` on PostgreSQL; SQLite ignores
    it and serializes writers anyway), with the recorded attribute types, in one
    statement; None if there is no such segment. For :func:`recompute_segment`
    with ``locked=True`` and these ``types``."""
    definitions = AttributeDefinition.__table__
    if session.get_bind().dialect.name == "postgresql":
        recorded = func.json_object_agg(definitions.c.name, definitions.c.type)
    else:
        recorded = func.json_group_object(definitions.c.name, definitions.c.type)
    types = select(recorded).where(definitions.c.kind == "attribute").scalar_subquery()
    row = session.execute(
        select(Segment, types).where(Segment.id == segment_id).with_for_update(of=Segment)
    ).first()
    if row is None:
        return None
    segment, found = row
    if isinstance(found, str):  # SQLite: JSON text
        found = json.loads(found)
    return segment, dict(found or {})  # PostgreSQL: NULL without definitions


def recompute_segment(
    session: Session,
    segment: Segment,
    now: datetime | None = None,
    *,
    locked: bool = False,
    types: dict[str, str] | None = None,
) -> Outcome:
    """Re-evaluate every customer against one segment, as one set-based diff.

    ``locked``: the caller already holds the segment's row lock (PostgreSQL: it
    loaded ``segment`` ``FOR UPDATE``, which serializes recomputes of one segment
    across workers; :func:`lock_segment`); otherwise it is taken here. ``types``:
    the recorded attribute types, when the caller read them in the same transaction
    (otherwise read here if the filters need them).

    A recompute that changes nothing writes no change rows and returns no
    computation (nothing to apply, start or announce); it still records
    ``last_computed_at`` (the schedule's time-based recomputes follow it),
    ``last_duration_ms`` and clears ``last_error``. ``member_count`` is counted again
    only when memberships changed: every other change of memberships keeps it by
    delta (incremental evaluation, merges, forgotten customers).
    """
    now = now or utcnow()
    started = time.perf_counter()
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql" and not locked:
        session.execute(select(Segment.id).where(Segment.id == segment.id).with_for_update())
    computation = uuid.uuid4().hex
    diff = _diff_for(session, segment, now, types)
    params = {**diff.compiler.params(now), "engage_at": now, "engage_computation": computation}
    written = rowcount(
        session.execute(diff.statement, params, execution_options={"preserve_rowcount": True})
    )
    joined, left = apply_computation(session, computation) if written else (0, 0)
    took = int((time.perf_counter() - started) * 1000)
    stats: dict[str, Any] = {
        "last_computed_at": now,
        "last_duration_ms": took,
        "last_error": None,
        "updated_at": segments_table.c.updated_at,  # stats are not an edit of the segment
    }
    if written:
        stats["member_count"] = (
            select(func.count()).where(memberships.c.segment_id == segment.id).scalar_subquery()
        )
    # Core, not ORM: no synchronization of loaded instances to pay for.
    session.execute(update(segments_table).where(segments_table.c.id == segment.id).values(stats))
    return Outcome(segment.slug, joined, left, took, computation if written else None)


def _diff_statement(dialect: str, segment_id: int, matching_query: Select[Any]) -> Insert:
    """``INSERT`` the change rows of one segment: joins (matching customers who are not
    members) and leaves (members who no longer match), in one statement that
    evaluates the condition once.

    PostgreSQL: one ``FULL JOIN`` of the matching customers with the current members
    (one hash join); the rows without a partner are the changes. SQLite (``FULL
    JOIN`` only from 3.39): the matching set as a CTE read by both set differences.
    The moment and the computation id are the parameters ``engage_at`` and
    ``engage_computation``, so the statement can be run again.
    """
    constants = (
        bindparam("engage_at", type_=change_rows.c.at.type),
        bindparam("engage_computation", type_=change_rows.c.computation.type),
    )
    columns = ["segment_id", "customer_id", "kind", "at", "computation"]
    if dialect == "postgresql":
        matching = matching_query.subquery("engage_matching")
        current = (
            select(memberships.c.customer_id)
            .where(memberships.c.segment_id == segment_id)
            .subquery("engage_current")
        )
        both = matching.outerjoin(current, current.c.customer_id == matching.c.id, full=True)
        kind = case((matching.c.id.is_(None), ChangeKind.LEFT.value), else_=ChangeKind.JOINED.value)
        rows = (
            select(
                literal(segment_id),
                func.coalesce(matching.c.id, current.c.customer_id),
                kind,
                *constants,
            )
            .select_from(both)
            .where(or_(matching.c.id.is_(None), current.c.customer_id.is_(None)))
        )
        return insert(change_rows).from_select(columns, rows)
    # Nested: the statement must start with INSERT, or Python's sqlite3 opens no
    # transaction for it and it commits on its own.
    found = matching_query.cte("engage_matching", nesting=True)
    is_member = exists().where(
        memberships.c.segment_id == segment_id, memberships.c.customer_id == found.c.id
    )
    joins = select(
        literal(segment_id), found.c.id, literal(ChangeKind.JOINED.value), *constants
    ).where(~is_member)
    leaves = select(
        literal(segment_id), memberships.c.customer_id, literal(ChangeKind.LEFT.value), *constants
    ).where(
        memberships.c.segment_id == segment_id,
        ~exists().where(found.c.id == memberships.c.customer_id),
    )
    return insert(change_rows).from_select(columns, union_all(joins, leaves))


#: Combined statements a process keeps (one per set of segments evaluated together).
_STATEMENTS = 256


@dataclass
class _EvaluationPlan:
    """The cached queries of incremental evaluation.

    ``columns`` holds one labelled boolean condition per segment that compiles (so a
    segment can be evaluated on its own when a combined statement fails), ``inputs``
    what each segment reads, and ``statements`` the combined SELECTs built so far,
    one per set of segments evaluated together.
    """

    key: tuple[Any, ...]
    compiler: Compiler
    columns: dict[int, Any]
    inputs: dict[int, frozenset[str]]
    statements: dict[tuple[int, ...], Select[Any]] = field(default_factory=dict)

    def statement(self, segment_ids: tuple[int, ...]) -> Select[Any]:
        """``SELECT id, <segments it is a member of>, <segment condition>...``
        restricted to ``engage_ids`` (current memberships as comma-separated ids:
        one round trip for both)."""
        found = self.statements.get(segment_ids)
        if found is None:
            if len(self.statements) >= _STATEMENTS:
                self.statements.clear()
            if self.compiler.dialect == "postgresql":
                listed = func.string_agg(cast(memberships.c.segment_id, Text), ",")
            else:
                listed = func.group_concat(memberships.c.segment_id, ",")
            member_of = select(listed).where(memberships.c.customer_id == customers.c.id)
            columns = [self.columns[seg_id] for seg_id in segment_ids]
            found = select(customers.c.id, member_of.scalar_subquery(), *columns).where(
                *self.compiler.scope()
            )
            self.statements[segment_ids] = found
        return found


@dataclass
class Evaluation:
    """What incremental evaluation did for a few customers."""

    #: Computation id when memberships changed, else None.
    computation: str | None = None
    #: Segments that could not be evaluated (now marked with ``last_error``).
    broken: dict[int, str] = field(default_factory=dict)
    #: Ids of the segments re-checked.
    evaluated: tuple[int, ...] = ()


def _fail_segment(session: Session, segment_id: int, error: str) -> None:
    """A segment could not be evaluated: say so on it, and leave it out of incremental
    evaluation in this process until it is recomputed (or edited)."""
    log.warning("flask-engage: segment %s cannot be evaluated: %s", segment_id, error)
    last_computed = session.scalar(select(Segment.last_computed_at).where(Segment.id == segment_id))
    session.execute(
        update(Segment)
        .where(Segment.id == segment_id)
        .values(last_error=error[:2000], updated_at=Segment.updated_at)
    )
    state = get_state()
    state.unevaluable.add((segment_id, last_computed))
    state.evaluation_plan = None


def _reads(node: Node, filters_of: Callable[[Any], Any], seen: set[str]) -> set[str]:
    """Input tokens of a filter, following segment references (each once)."""
    tokens: set[str] = set()
    for item in walk(node):
        tokens.update(item.inputs())
        for ref in item.segment_refs():
            filters = filters_of(ref)
            if filters is not None and str(ref) not in seen:
                seen.add(str(ref))
                tokens |= _reads(read_filter(filters), filters_of, seen)
    return tokens


def _evaluation_plan(session: Session, now: datetime) -> tuple[_EvaluationPlan, list[Any]]:
    """The cached plan, and the segments (id, last computed, time-based) it covers.

    Built once and reused while no segment and no attribute type changes (checked
    with one cheap query); only its parameters (now, ids) change between calls.
    Segments that failed here are left out until their next recompute.
    """
    state = get_state()
    types = select(func.count()).where(AttributeDefinition.kind == "attribute").scalar_subquery()
    rows = session.execute(
        select(
            Segment.id,
            Segment.updated_at,
            Segment.last_computed_at,
            Segment.is_time_based,
            types.label("types"),
        ).order_by(Segment.id)
    ).all()
    healthy = rows
    if state.unevaluable:
        healthy = [row for row in rows if (row.id, row.last_computed_at) not in state.unevaluable]
    key = (tuple((row.id, row.updated_at) for row in healthy), rows[0].types if rows else 0)
    plan = state.evaluation_plan
    if plan is None or plan.key != key:
        compiler = make_compiler(session, now, customer_ids=[])
        filters: dict[int, Any] = dict(session.execute(select(Segment.id, Segment.filters)).all())
        columns, inputs = {}, {}
        for row in healthy:
            try:
                node = read_filter(filters[row.id])
                columns[row.id] = compiler.condition(node).label(f"s{row.id}")
                inputs[row.id] = frozenset(_reads(node, compiler.segment_filters, set()))
            except Exception as exc:  # a filter that no longer compiles stays local to it
                _fail_segment(session, row.id, f"{type(exc).__name__}: {exc}")
        plan = _EvaluationPlan(key, compiler, columns, inputs)
        state.evaluation_plan = plan
    return plan, [row for row in healthy if row.id in plan.columns]


def _relevant(
    plan: _EvaluationPlan, rows: list[Any], changes: Changes | None, now: datetime
) -> tuple[int, ...]:
    """The segments to re-check for ``changes`` (all of them for None)."""
    if changes is None:
        return tuple(row.id for row in rows)
    touched = changes.tokens() | {ANYTHING}
    stale = now - timedelta(seconds=current_app.config["ENGAGE_RECOMPUTE_INTERVAL"])
    return tuple(
        row.id
        for row in rows
        if not plan.inputs[row.id].isdisjoint(touched)
        or (
            row.is_time_based
            and (row.last_computed_at is None or not stale < row.last_computed_at <= now)
        )
    )


@dataclass
class _Found:
    """What the evaluation statement found for some customers."""

    #: (segment id, customer id) pairs that should be memberships.
    desired: set[tuple[int, int]] = field(default_factory=set)
    #: Current memberships, of the evaluated segments, of the customers it read.
    current: set[tuple[int, int]] = field(default_factory=set)
    #: Customers whose memberships it did not read (deleted ones, or after a failure).
    unread: list[int] = field(default_factory=list)
    #: Segments that could not be evaluated, with why.
    broken: dict[int, str] = field(default_factory=dict)


def _desired(
    session: Session,
    plan: _EvaluationPlan,
    segment_ids: tuple[int, ...],
    ids: list[int],
    now: datetime,
) -> _Found:
    """Which customers should be in which segments, and who is in them now.

    One statement for all ``segment_ids``; if it fails, segment by segment in
    savepoints, so a segment that cannot be evaluated fails alone.
    """
    params = plan.compiler.params(now, ids)
    found = _Found()
    try:
        with session.begin_nested():
            rows = session.execute(plan.statement(segment_ids), params).all()
    except Exception:
        log.warning(
            "flask-engage: evaluating %d segments together failed; one by one", len(segment_ids)
        )
    else:
        evaluated = {str(seg_id): seg_id for seg_id in segment_ids}
        for row in rows:
            for seg_id, inside in zip(segment_ids, row[2:], strict=True):
                if inside:
                    found.desired.add((seg_id, row[0]))
            for listed in (row[1] or "").split(","):
                if listed in evaluated:
                    found.current.add((evaluated[listed], row[0]))
        read = {row[0] for row in rows}
        found.unread = [customer_id for customer_id in ids if customer_id not in read]
        return found
    found.unread = ids
    scope = plan.compiler.scope()
    for seg_id in segment_ids:
        try:
            with session.begin_nested():
                statement = select(customers.c.id, plan.columns[seg_id]).where(*scope)
                rows = session.execute(statement, params).all()
        except Exception as exc:
            found.broken[seg_id] = f"{type(exc).__name__}: {exc}"
            continue
        found.desired.update((seg_id, row[0]) for row in rows if row[1])
    return found


def evaluate_customers(
    session: Session,
    customer_ids: Sequence[int],
    now: datetime | None = None,
    changes: Changes | None = None,
) -> Evaluation:
    """Re-evaluate a few customers against the segments in one query: every segment,
    or with ``changes`` only those that what changed can affect (see :class:`Changes`).

    A segment that cannot be evaluated keeps its current members, is marked with
    ``last_error`` and left out until a recompute succeeds; the other segments are
    evaluated as usual.
    """
    now = now or utcnow()
    ids = list(dict.fromkeys(customer_ids))
    if not ids:
        return Evaluation()
    plan, rows = _evaluation_plan(session, now)
    segment_ids = _relevant(plan, rows, changes, now)
    if not segment_ids:
        return Evaluation()
    found = _desired(session, plan, segment_ids, ids, now)
    broken, desired, current = found.broken, found.desired, found.current
    for seg_id, error in broken.items():
        _fail_segment(session, seg_id, error)
    evaluated = [seg_id for seg_id in segment_ids if seg_id not in broken]
    if found.unread:
        read = select(memberships.c.segment_id, memberships.c.customer_id).where(
            memberships.c.customer_id.in_(found.unread), memberships.c.segment_id.in_(evaluated)
        )
        current.update((seg_id, customer_id) for seg_id, customer_id in session.execute(read))
    joined, left = desired - current, current - desired
    if not joined and not left:
        return Evaluation(None, broken, tuple(evaluated))
    computation = uuid.uuid4().hex
    session.execute(
        insert(change_rows),
        [
            {"segment_id": s, "customer_id": c, "kind": kind, "at": now, "computation": computation}
            for kind, pairs in ((ChangeKind.JOINED, joined), (ChangeKind.LEFT, left))
            for s, c in pairs
        ],
    )
    apply_computation(session, computation)
    deltas: dict[int, int] = {}
    for delta, pairs in ((1, joined), (-1, left)):
        for seg_id, _ in pairs:
            deltas[seg_id] = deltas.get(seg_id, 0) + delta
    # Sorted, so concurrent workers lock segment rows in the same order (no deadlock).
    counts = [{"b_id": seg_id, "delta": delta} for seg_id, delta in sorted(deltas.items()) if delta]
    if counts:
        segments_table = Segment.__table__
        session.execute(
            update(segments_table)
            .where(segments_table.c.id == bindparam("b_id"))
            .values(
                member_count=segments_table.c.member_count + bindparam("delta"),
                updated_at=segments_table.c.updated_at,  # keeps the evaluation plan cached
            ),
            counts,
        )
    return Evaluation(computation, broken, tuple(evaluated))


def apply_computation(session: Session, computation: str) -> tuple[int, int]:
    """Turn one computation's change rows into memberships."""
    of_computation = change_rows.c.computation == computation
    joined = rowcount(
        session.execute(
            insert(memberships).from_select(
                ["segment_id", "customer_id", "joined_at"],
                select(change_rows.c.segment_id, change_rows.c.customer_id, change_rows.c.at).where(
                    of_computation, change_rows.c.kind == ChangeKind.JOINED
                ),
            ),
            execution_options={"preserve_rowcount": True},  # INSERT rowcount is -1 otherwise
        )
    )
    left = rowcount(
        session.execute(
            delete(memberships).where(
                tuple_(memberships.c.segment_id, memberships.c.customer_id).in_(
                    select(change_rows.c.segment_id, change_rows.c.customer_id).where(
                        of_computation, change_rows.c.kind == ChangeKind.LEFT
                    )
                )
            )
        )
    )
    return joined, left


def send_signals(session: Session, computations: Iterable[str | None], chunk: int = 500) -> None:
    """Send ``segment_joined``/``segment_left`` for committed computations.

    Loads customers in chunks and only when someone listens, so memory stays flat.
    """
    wanted = [c for c in computations if c]
    if not wanted or not (signals.segment_joined.receivers or signals.segment_left.receivers):
        return
    app = this_app()
    segments = {s.id: s for s in session.scalars(select(Segment))}
    last_id = 0
    while True:
        rows = session.execute(
            select(
                change_rows.c.id,
                change_rows.c.segment_id,
                change_rows.c.customer_id,
                change_rows.c.kind,
            )
            .where(change_rows.c.computation.in_(wanted), change_rows.c.id > last_id)
            .order_by(change_rows.c.id)
            .limit(chunk)
        ).all()
        if not rows:
            return
        loaded = {
            c.id: c
            for c in session.scalars(
                select(Customer).where(Customer.id.in_({r.customer_id for r in rows}))
            )
        }
        for row in rows:
            joined = row.kind == ChangeKind.JOINED
            signal = signals.segment_joined if joined else signals.segment_left
            segment, customer = segments.get(row.segment_id), loaded.get(row.customer_id)
            if segment is not None and customer is not None:
                try:
                    signal.send(app, segment=segment, customer=customer)
                except Exception:  # a receiver's bug must not stop the others
                    log.exception("a %s receiver failed", signal.name)
        last_id = rows[-1].id
