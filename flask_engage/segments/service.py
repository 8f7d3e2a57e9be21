"""Segments as users see them: create, update, delete, look up, count, members."""

from __future__ import annotations

import copy
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from flask import current_app
from sqlalchemy import and_, case, exists, func, select, true
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Query, Session

from ..db import log
from ..errors import InvalidFilter, StateError, ValidationError
from ..models import (
    LIVE_RUNS,
    Automation,
    AutomationRun,
    Broadcast,
    Customer,
    CustomerList,
    Membership,
    Segment,
    SegmentSnapshot,
    TriggerKind,
    utcnow,
)
from ..values import EARLIEST, SLUG, row_id
from .compiler import Compiler, customers
from .membership import make_compiler
from .nodes import Node
from .schema import (
    Bounds,
    Lookup,
    check_filter,
    earliest_event,
    referenced_segments,
    uses_relative_time,
)

DEFAULT_NAME = "All"
DEFAULT_SLUG = "all"

T = TypeVar("T")


def slugify(name: str) -> str:
    """``"Pro in Lagos"`` -> ``pro-in-lagos``."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def find_segment(session: Session, ref: int | str | Segment) -> Segment | None:
    """A segment by instance, id or slug."""
    if isinstance(ref, Segment):
        return session.get(Segment, ref.id)
    segment_id = row_id(ref)
    found = None if segment_id is None else session.get(Segment, segment_id)
    if found is None and isinstance(ref, str) and SLUG.match(ref):
        found = session.scalar(select(Segment).where(Segment.slug == ref))
    return found


def _lookups(session: Session) -> dict[str, Lookup]:
    """How conditions find what they refer to in this database, per node kind."""

    def segment(ref: int | str) -> tuple[int, str, dict[str, Any]] | None:
        found = find_segment(session, ref)
        return None if found is None else (found.id, found.slug, found.filters)

    def listed(ref: int | str) -> int | None:
        # lists build on segments, so this reads the table rather than lists.service
        list_id = row_id(ref)
        if list_id is not None and session.get(CustomerList, list_id) is not None:
            return list_id
        if not (isinstance(ref, str) and SLUG.match(ref)):
            return None
        return session.scalar(select(CustomerList.id).where(CustomerList.slug == ref))

    return {"segment": segment, "list": listed}


def _filters_of(session: Session) -> Callable[[Any], dict[str, Any] | None]:
    def filters_of(ref: Any) -> dict[str, Any] | None:
        found = find_segment(session, ref)
        return None if found is None else found.filters

    return filters_of


def _time_based(session: Session, filters: dict[str, Any]) -> bool:
    return uses_relative_time(filters, _filters_of(session))


def past_retention(session: Session, filters: Any, now: datetime) -> datetime | None:
    """With ``ENGAGE_EVENT_RETENTION_DAYS`` set, the earliest instant ``filters`` read
    (:data:`~flask_engage.values.EARLIEST`: all events) when it is older than the
    events kept, so the segment counts fewer events than its filter says; else None."""
    return _past_retention(filters, _filters_of(session), now)


def _past_retention(
    filters: Any, filters_of: Callable[[Any], dict[str, Any] | None], now: datetime
) -> datetime | None:
    days = current_app.config["ENGAGE_EVENT_RETENTION_DAYS"]
    if days is None:
        return None
    reach = earliest_event(filters, filters_of, now)
    return reach if reach is not None and reach < now - timedelta(days=days) else None


def retention_warnings(session: Session, now: datetime | None = None) -> dict[str, str]:
    """Segment slug -> why its filter reads events older than the retention keeps
    (one query: references are looked up among the segments read)."""
    now = now or utcnow()
    segments = session.scalars(select(Segment).order_by(Segment.slug)).all()
    by_ref: dict[Any, dict[str, Any]] = {s.slug: s.filters for s in segments}
    for segment in segments:  # an all-digit reference is an id first, as find_segment
        by_ref[segment.id] = by_ref[str(segment.id)] = segment.filters
    warnings = {}
    for segment in segments:
        reach = _past_retention(segment.filters, by_ref.get, now)
        if reach is not None:
            warnings[segment.slug] = _retention_message(reach)
    return warnings


def _retention_message(reach: datetime) -> str:
    days = current_app.config["ENGAGE_EVENT_RETENTION_DAYS"]
    since = "all events" if reach == EARLIEST else f"events since {reach:%Y-%m-%d}"
    return f"reads {since}, but events older than {days} days are deleted"


def _warn_past_retention(session: Session, segment: Segment) -> None:
    reach = past_retention(session, segment.filters, utcnow())
    if reach is not None:
        log.warning(
            "flask-engage: segment %r %s (ENGAGE_EVENT_RETENTION_DAYS)",
            segment.name,
            _retention_message(reach),
        )


def _checked(session: Session, filters: Any, self_slug: str | None = None) -> Node:
    """A filter's node tree, checked against this database's segments and the bounds."""
    bounds = Bounds(max_list_values=current_app.config["ENGAGE_MAX_LIST_VALUES"])
    return check_filter(filters, lookups=_lookups(session), self_slug=self_slug, bounds=bounds)


def _evaluated(session: Session, run: Callable[[], T]) -> T:
    """``run()`` in a savepoint; a database that cannot evaluate the filter (or an
    overflow while building it) is an :class:`InvalidFilter` and leaves nothing behind.

    The session's pending work is flushed first, and a lost connection is not the
    filter's fault: both raise as they are.
    """
    session.flush()
    try:
        with session.begin_nested():
            return run()
    except (DBAPIError, OverflowError, RecursionError) as exc:
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            raise
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
        raise InvalidFilter(
            f"filters: the database cannot evaluate this filter ({reason})", field="filters"
        ) from None


def check_filters(session: Session, filters: Any, self_slug: str | None = None) -> dict[str, Any]:
    """Validate a filter against this database's segments (refs exist, no cycles), the
    bounds, and the database itself: it must compile and run (``LIMIT 0``).

    Returns a copy of the filter *as given*: that is what is stored and shown back
    (slug references follow a rename); the compiler reads it into the same checked form.
    """
    node = _checked(session, filters, self_slug)
    compiler = make_compiler(session, utcnow())
    _evaluated(session, lambda: session.execute(compiler.query(node).limit(0)).all())
    return copy.deepcopy(filters)


def _rename_references(node: Any, old: str, new: str, kind: str = "segment") -> Any:
    """The filter with references of ``kind`` (``segment``, ``list``) to slug ``old``
    pointing at ``new``."""
    if isinstance(node, list):
        return [_rename_references(child, old, new, kind) for child in node]
    if not isinstance(node, dict):
        return node
    if node.get(kind) == old:
        return {**node, kind: new}
    return {key: _rename_references(value, old, new, kind) for key, value in node.items()}


def check_name(
    session: Session, name: Any, model: Any, noun: str, current: Any = None
) -> tuple[str, str]:
    """A name and its slug for a row of ``model`` (a segment or a list: ``noun``),
    unique by both; ``current`` is the row being renamed."""
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(f"name: a {noun} needs a name", field="name")
    name = name.strip()
    if len(name) > 200:
        raise ValidationError("name: longer than 200 characters", field="name")
    slug = slugify(name)
    if not slug:
        raise ValidationError(f"name: {name!r} has no letters or digits for a slug", field="name")
    clash = session.scalar(select(model).where((model.slug == slug) | (model.name == name)))
    if clash is not None and (current is None or clash.id != current.id):
        raise ValidationError(f"name: a {noun} named {clash.name!r} already exists", field="name")
    return name, slug


def ensure_default(session: Session) -> Segment:
    """The default segment ``All``, created on first use."""
    found = session.scalar(select(Segment).where(Segment.is_default.is_(True)))
    if found is None:
        found = Segment(name=DEFAULT_NAME, slug=DEFAULT_SLUG, filters={"all": []}, is_default=True)
        session.add(found)
        session.flush()
    return found


def create_segment(
    session: Session, name: str, filters: Any, description: str | None = None
) -> Segment:
    """Insert a validated segment (membership is computed by the caller)."""
    ensure_default(session)
    name, slug = check_name(session, name, Segment, "segment")
    checked = check_filters(session, filters, self_slug=slug)
    segment = Segment(
        name=name,
        slug=slug,
        description=description,
        filters=checked,
        is_time_based=_time_based(session, checked),
    )
    session.add(segment)
    session.flush()
    _warn_past_retention(session, segment)
    return segment


def update_segment(
    session: Session,
    segment: Segment,
    *,
    name: str | None = None,
    filters: Any = None,
    description: str | None = None,
) -> bool:
    """Apply changes; True when the filters changed (membership must be recomputed)."""
    if segment.is_default and (name is not None or filters is not None):
        raise StateError("the default segment 'All' cannot be renamed or filtered")
    if name is not None:
        old_slug = segment.slug
        segment.name, segment.slug = check_name(session, name, Segment, "segment", segment)
        if segment.slug != old_slug:  # references by slug follow the rename
            for other in session.scalars(select(Segment).where(Segment.id != segment.id)):
                renamed = _rename_references(other.filters, old_slug, segment.slug)
                if renamed != other.filters:
                    other.filters = renamed
    if description is not None:
        segment.description = description
    changed = False
    if filters is not None:
        checked = check_filters(session, filters, self_slug=segment.slug)
        changed = checked != segment.filters
        segment.filters = checked
        segment.is_time_based = _time_based(session, checked)
        if changed:
            session.query(SegmentSnapshot).filter_by(segment_id=segment.id).delete()
            _warn_past_retention(session, segment)
    session.flush()
    return changed


def delete_segment(session: Session, segment: Segment) -> None:
    """Delete a segment unless it is the default or still used elsewhere."""
    if segment.is_default:
        raise StateError("the default segment 'All' cannot be deleted")
    users = [
        other.name
        for other in session.scalars(select(Segment).where(Segment.id != segment.id))
        if segment.id in referenced_segments(other.filters)
        or segment.slug in referenced_segments(other.filters)
    ]
    users += [
        a.name
        for a in session.scalars(
            select(Automation).where(Automation.trigger_segment_id == segment.id)
        )
    ]
    users += [
        b.name
        for b in session.scalars(
            select(Broadcast).where(
                Broadcast.status.in_(("draft", "scheduled", "queued", "sending"))
            )
        )
        if segment.id in (b.segment_ids or [])
    ]
    if users:
        raise StateError(f"segment {segment.name!r} is still used by: {', '.join(sorted(users))}")
    session.delete(segment)
    session.flush()


def count(session: Session, filters: Any, now: datetime | None = None) -> int:
    """How many customers match a filter right now (or as of ``now``)."""
    node = _checked(session, filters)
    compiler = make_compiler(session, now or utcnow())

    def run() -> int | None:
        where = [*compiler.scope(), compiler.condition(node)]
        return session.scalar(select(func.count()).select_from(customers).where(*where))

    return _evaluated(session, run) or 0


def members(session: Session, segment: Segment) -> Query[Customer]:
    """A query of the segment's current customers, ordered by id."""
    inside = select(Membership.customer_id).where(Membership.segment_id == segment.id)
    return session.query(Customer).filter(Customer.id.in_(inside)).order_by(Customer.id)


@dataclass
class AutomationImpact:
    """An automation an edit would start, and for how many customers."""

    id: int
    name: str
    #: ``joins`` or ``leaves``.
    trigger: str
    customers: int
    #: Name of the segment it watches (the edited one, or one that refers to it).
    segment: str = ""


@dataclass
class SegmentImpact:
    """A segment that refers to the edited one, and how its members would change."""

    id: int
    name: str
    joining: int
    leaving: int


@dataclass
class Impact:
    """What saving new filters on a segment would change (nothing is written)."""

    joining: int
    leaving: int
    #: Active automations, on the segment or on a segment that refers to it, that
    #: would start runs, with how many.
    automations: list[AutomationImpact] = field(default_factory=list)
    #: Segments that refer to this one (directly or not) whose members would change.
    segments: list[SegmentImpact] = field(default_factory=list)


def dependent_segments(session: Session, segment: Segment) -> list[Segment]:
    """Segments whose filters refer to ``segment``, directly or through others.

    Their members follow its filters (a reference is evaluated from the referenced
    filter), so an edit changes them too.
    """
    everyone = list(session.scalars(select(Segment).order_by(Segment.id)))
    refs = {s.id: referenced_segments(s.filters) for s in everyone}
    found: list[Segment] = []
    pending = [segment]
    while pending:
        current = pending.pop()
        names = {current.id, str(current.id), current.slug}
        for other in everyone:
            if other.id != segment.id and other not in found and names & refs[other.id]:
                found.append(other)
                pending.append(other)
    return found


def preview_impact(
    session: Session, segment: Segment, filters: Any, now: datetime | None = None
) -> Impact:
    """How many customers would join and leave ``segment`` with ``filters`` (and each
    segment that refers to it), and which of their automations would start for how
    many (as ``start_runs`` decides: active ones, not for customers who went through
    it once unless it allows re-entry, never twice at the same time). Computed with
    the compiler, in a savepoint: nothing is written. Raises :class:`InvalidFilter`
    as saving would.
    """
    node = _checked(session, filters, self_slug=segment.slug)
    dependents = dependent_segments(session, segment)
    compiler = make_compiler(session, now or utcnow(), replaced={segment.id: filters})

    def run() -> Impact:
        joining, leaving, automations = _changes(session, compiler, segment, node)
        impact = Impact(joining, leaving, automations)
        for dependent in dependents:
            joins, leaves, started = _changes(session, compiler, dependent, dependent.filters)
            if joins or leaves:
                impact.segments.append(SegmentImpact(dependent.id, dependent.name, joins, leaves))
                impact.automations += started
        return impact

    return _evaluated(session, run)


def _changes(
    session: Session, compiler: Compiler, segment: Segment, node: Node | dict[str, Any]
) -> tuple[int, int, list[AutomationImpact]]:
    """Who would join and leave ``segment`` if it matched ``node``, and the runs its
    active automations would start for them."""
    memberships = Membership.__table__
    runs = AutomationRun.__table__
    condition = and_(*compiler.scope(), compiler.condition(node))
    is_member = exists().where(
        memberships.c.segment_id == segment.id, memberships.c.customer_id == customers.c.id
    )
    joining = select(customers.c.id.label("id")).where(condition, ~is_member).subquery()
    still = select(customers.c.id).where(customers.c.id == memberships.c.customer_id, condition)
    leaving = (
        select(memberships.c.customer_id.label("id"))
        .where(memberships.c.segment_id == segment.id, ~still.exists())
        .subquery()
    )
    watching = session.scalars(
        select(Automation)
        .where(Automation.trigger_segment_id == segment.id, Automation.active.is_(True))
        .order_by(Automation.name)
    ).all()
    count: dict[TriggerKind, int] = {}
    starting: dict[int, int] = {}
    for kind, who in ((TriggerKind.JOINS, joining), (TriggerKind.LEAVES, leaving)):
        # one pass over who joins (or leaves): how many, and for each automation how
        # many it would start for (not blocked by a run of theirs)
        columns = [func.count().label("n")]
        for automation in watching:
            if automation.trigger_kind != kind:
                continue
            blocked = exists().where(
                runs.c.automation_id == automation.id,
                runs.c.customer_id == who.c.id,
                runs.c.status.in_(LIVE_RUNS) if automation.reentry else true(),
            )
            columns.append(func.sum(case((blocked, 0), else_=1)).label(f"a{automation.id}"))
        row = session.execute(select(*columns).select_from(who)).one()
        count[kind] = row.n or 0
        starting.update((int(name[1:]), int(row._mapping[name] or 0)) for name in row._fields[1:])
    started = [
        AutomationImpact(
            automation.id,
            automation.name,
            automation.trigger_kind,
            starting[automation.id],
            segment.name,
        )
        for automation in watching
        if count[TriggerKind(automation.trigger_kind)]
    ]
    return count[TriggerKind.JOINS], count[TriggerKind.LEAVES], started
