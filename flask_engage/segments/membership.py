"""Membership that maintains itself: full recomputes and incremental evaluation.

Both end the same way: the changes of one *computation* are written to
``engage_membership_changes`` and :func:`apply_computation` turns them into
memberships (one INSERT ... SELECT and one DELETE). The caller, in the same
transaction, starts what the changes trigger (automation runs) from the
computation id; signals fire only after that transaction commits
(:func:`send_signals`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import (
    Select,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import Session

from .. import signals
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
from .compiler import Compiler, customers

changes = MembershipChange.__table__
memberships = Membership.__table__


@dataclass
class Outcome:
    """What one evaluation changed."""

    segment: str
    joined: int
    left: int
    took_ms: int
    computation: str | None = None
    error: str | None = None


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
    types = dict(
        session.execute(
            select(AttributeDefinition.name, AttributeDefinition.type).where(
                AttributeDefinition.kind == "attribute"
            )
        ).all()
    )
    by_id: dict[Any, dict[str, Any]] = {}
    for seg_id, slug, filters in session.execute(select(Segment.id, Segment.slug, Segment.filters)):
        filters = (replaced or {}).get(seg_id, filters)
        by_id[seg_id] = by_id[slug] = by_id[str(seg_id)] = filters
    return Compiler(
        session.get_bind().dialect.name,
        now,
        current_app.config["ENGAGE_TIMEZONE"],
        types,
        by_id.get,
        customer_ids,
        as_of,
    )


def recompute_segment(session: Session, segment: Segment, now: datetime | None = None) -> Outcome:
    """Re-evaluate every customer against one segment, as one set-based diff."""
    now = now or utcnow()
    started = time.perf_counter()
    if session.get_bind().dialect.name == "postgresql":
        # Serialize recomputes of one segment across workers.
        session.execute(select(Segment.id).where(Segment.id == segment.id).with_for_update())
    computation = uuid.uuid4().hex
    compiler = make_compiler(session, now)
    condition = and_(*compiler.scope(), compiler.condition(segment.filters))
    is_member = exists().where(
        memberships.c.segment_id == segment.id, memberships.c.customer_id == customers.c.id
    )
    session.execute(
        insert(changes).from_select(
            ["segment_id", "customer_id", "kind", "at", "computation"],
            select(
                literal(segment.id),
                customers.c.id,
                literal(ChangeKind.JOINED.value),
                literal(now, changes.c.at.type),
                literal(computation),
            ).where(condition, ~is_member),
        )
    )
    still_matches = select(customers.c.id).where(
        customers.c.id == memberships.c.customer_id, condition
    )
    session.execute(
        insert(changes).from_select(
            ["segment_id", "customer_id", "kind", "at", "computation"],
            select(
                literal(segment.id),
                memberships.c.customer_id,
                literal(ChangeKind.LEFT.value),
                literal(now, changes.c.at.type),
                literal(computation),
            ).where(memberships.c.segment_id == segment.id, ~still_matches.exists()),
        )
    )
    joined, left = apply_computation(session, computation)
    took = int((time.perf_counter() - started) * 1000)
    count = session.scalar(select(func.count()).where(memberships.c.segment_id == segment.id))
    session.execute(
        update(Segment)
        .where(Segment.id == segment.id)
        .values(
            last_computed_at=now,
            last_duration_ms=took,
            last_error=None,
            member_count=count,
            updated_at=Segment.updated_at,  # stats are not an edit of the segment
        )
    )
    return Outcome(segment.slug, joined, left, took, computation)


@dataclass
class _EvaluationPlan:
    """The cached all-segments query of incremental evaluation.

    ``columns`` holds one labelled boolean condition per segment, so a segment can
    be evaluated on its own when the combined statement fails.
    """

    key: tuple[Any, ...]
    segment_ids: list[int]
    columns: list[Any]
    statement: Select[Any]
    compiler: Compiler


@dataclass
class Evaluation:
    """What incremental evaluation did for a few customers."""

    #: Computation id when memberships changed, else None.
    computation: str | None = None
    #: Segments that could not be evaluated (now marked with ``last_error``).
    broken: dict[int, str] = field(default_factory=dict)


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


def _evaluation_plan(session: Session, now: datetime) -> _EvaluationPlan:
    """One SELECT with a boolean column per segment, restricted to ``engage_ids``.

    Built once and reused while no segment and no attribute type changes (checked
    with one cheap query); only its parameters (now, ids) change between calls.
    Segments that failed here are left out until their next recompute.
    """
    state = get_state()
    rows = session.execute(
        select(Segment.id, Segment.updated_at, Segment.last_computed_at).order_by(Segment.id)
    ).all()
    healthy = [row for row in rows if (row.id, row.last_computed_at) not in state.unevaluable]
    types = session.scalar(select(func.count()).where(AttributeDefinition.kind == "attribute"))
    key = (tuple((row.id, row.updated_at) for row in healthy), types)
    plan = state.evaluation_plan
    if plan is not None and plan.key == key:
        return plan
    compiler = make_compiler(session, now, customer_ids=[])
    filters: dict[int, Any] = dict(session.execute(select(Segment.id, Segment.filters)).all())
    ids, columns = [], []
    for row in healthy:
        try:
            columns.append(compiler.condition(filters[row.id]).label(f"s{row.id}"))
        except Exception as exc:  # a filter that no longer compiles stays local to its segment
            _fail_segment(session, row.id, f"{type(exc).__name__}: {exc}")
            continue
        ids.append(row.id)
    statement = select(customers.c.id, *columns).where(*compiler.scope())
    plan = _EvaluationPlan(key, ids, columns, statement, compiler)
    state.evaluation_plan = plan
    return plan


def _desired(
    session: Session, plan: _EvaluationPlan, ids: list[int], now: datetime
) -> tuple[set[tuple[int, int]], dict[int, str]]:
    """(segment id, customer id) pairs that should be memberships, and broken segments.

    One statement for every segment; if it fails, segment by segment in savepoints,
    so a segment that cannot be evaluated fails alone.
    """
    params = plan.compiler.params(now, ids)
    desired: set[tuple[int, int]] = set()
    try:
        with session.begin_nested():
            rows = session.execute(plan.statement, params).all()
    except Exception:
        log.warning("flask-engage: evaluating %d segments together failed; one by one", len(ids))
    else:
        for row in rows:
            for seg_id, inside in zip(plan.segment_ids, row[1:], strict=True):
                if inside:
                    desired.add((seg_id, row[0]))
        return desired, {}
    broken: dict[int, str] = {}
    scope = plan.compiler.scope()
    for seg_id, column in zip(plan.segment_ids, plan.columns, strict=True):
        try:
            with session.begin_nested():
                rows = session.execute(select(customers.c.id, column).where(*scope), params).all()
        except Exception as exc:
            broken[seg_id] = f"{type(exc).__name__}: {exc}"
            continue
        desired.update((seg_id, row[0]) for row in rows if row[1])
    return desired, broken


def evaluate_customers(
    session: Session, customer_ids: Sequence[int], now: datetime | None = None
) -> Evaluation:
    """Re-evaluate a few customers against every segment in one query.

    A segment that cannot be evaluated keeps its current members, is marked with
    ``last_error`` and left out until a recompute succeeds; the other segments are
    evaluated as usual.
    """
    now = now or utcnow()
    ids = list(dict.fromkeys(customer_ids))
    if not ids:
        return Evaluation()
    plan = _evaluation_plan(session, now)
    if not plan.segment_ids:
        return Evaluation()
    desired, broken = _desired(session, plan, ids, now)
    for seg_id, error in broken.items():
        _fail_segment(session, seg_id, error)
    evaluated = [seg_id for seg_id in plan.segment_ids if seg_id not in broken]
    current = {
        (seg_id, customer_id)
        for seg_id, customer_id in session.execute(
            select(memberships.c.segment_id, memberships.c.customer_id).where(
                memberships.c.customer_id.in_(ids), memberships.c.segment_id.in_(evaluated)
            )
        )
    }
    joined, left = desired - current, current - desired
    if not joined and not left:
        return Evaluation(None, broken)
    computation = uuid.uuid4().hex
    session.execute(
        insert(changes),
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
    return Evaluation(computation, broken)


def apply_computation(session: Session, computation: str) -> tuple[int, int]:
    """Turn one computation's change rows into memberships."""
    of_computation = changes.c.computation == computation
    joined = rowcount(
        session.execute(
            insert(memberships).from_select(
                ["segment_id", "customer_id", "joined_at"],
                select(changes.c.segment_id, changes.c.customer_id, changes.c.at).where(
                    of_computation, changes.c.kind == ChangeKind.JOINED
                ),
            ),
            execution_options={"preserve_rowcount": True},  # INSERT rowcount is -1 otherwise
        )
    )
    left = rowcount(
        session.execute(
            delete(memberships).where(
                tuple_(memberships.c.segment_id, memberships.c.customer_id).in_(
                    select(changes.c.segment_id, changes.c.customer_id).where(
                        of_computation, changes.c.kind == ChangeKind.LEFT
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
            select(changes.c.id, changes.c.segment_id, changes.c.customer_id, changes.c.kind)
            .where(changes.c.computation.in_(wanted), changes.c.id > last_id)
            .order_by(changes.c.id)
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
