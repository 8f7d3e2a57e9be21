"""Segment filters: validation with paths, tree walks, and the JSON Schema of the format.

A filter is a tree (see ``DESIGN.md``)::

    FILTER    := {"all": [...]} | {"any": [...]} | {"not": FILTER} | CONDITION
    CONDITION := ATTRIBUTE | EVENT | SEGMENT | CHANNEL

Every function here is generic over the node kinds of :mod:`.nodes`.
:func:`validate_filter` returns a normalized copy (datetimes in their stored form,
defaults filled in) or raises :class:`~flask_engage.errors.InvalidFilter` whose
message starts with the path of the bad node, e.g.
``filters.all[2].op: unknown operator 'equals'``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

from flask import current_app, has_app_context

from ..config import DEFAULTS
from ..errors import InvalidFilter
from ..values import MAX_DAYS, MAX_INT64, MIN_INT64
from . import operators, windows
from .nodes import Node, kind_keys, kinds, parse_node, walk
from .operators import DURATION_UNITS, OPERATORS
from .parsing import MAX_DEPTH, MAX_NODES, Bounds, Lookup, Parser, SegmentLookup
from .windows import CALENDAR as _CALENDAR
from .windows import WINDOW_KINDS

CALENDAR = tuple(_CALENDAR)

__all__ = [
    "CALENDAR",
    "MAX_DEPTH",
    "MAX_NODES",
    "OPERATORS",
    "WINDOW_KINDS",
    "Bounds",
    "Lookup",
    "SegmentLookup",
    "check_filter",
    "json_schema",
    "referenced_segments",
    "uses_relative_time",
    "validate_filter",
]


def check_filter(
    filters: Any,
    *,
    lookups: Mapping[str, Lookup] | None = None,
    self_slug: str | None = None,
    bounds: Bounds | None = None,
    path: str = "filters",
) -> Node:
    """Check a filter a user gives (shape and ``bounds``); return its node tree.

    ``lookups`` find what conditions refer to, per node kind (``{"segment": ...}``:
    references must exist and become ids); ``self_slug`` is the slug of the segment
    being saved, to reject cycles through it.
    """
    return parse_node(Parser(lookups, self_slug, bounds or Bounds()), filters, path)


def validate_filter(
    filters: Any,
    *,
    lookup: SegmentLookup | None = None,
    self_slug: str | None = None,
    path: str = "filters",
    bounds: Bounds | None = None,
) -> dict[str, Any]:
    """Check a filter and return its normalized JSON form (segment refs become ids)."""
    lookups = {} if lookup is None else {"segment": lookup}
    node = check_filter(filters, lookups=lookups, self_slug=self_slug, bounds=bounds, path=path)
    return node.to_json()


def _read(filters: Any) -> Node | None:
    """The node tree of a stored filter; None for anything that does not read as one
    (it then refers to no segment and does not move with the clock)."""
    if isinstance(filters, Node):
        return filters
    try:
        return parse_node(Parser(), filters, "filters")
    except InvalidFilter:
        return None


def referenced_segments(filters: Mapping[str, Any] | Node) -> set[int | str]:
    """Ids (or slugs) of the segments a filter refers to directly."""
    root = _read(filters)
    if root is None:
        return set()
    return {ref for node in walk(root) for ref in node.segment_refs()}


def _nodes_through_references(
    filters: Mapping[str, Any] | Node,
    segment_filters: Callable[[Any], Mapping[str, Any] | None],
) -> Iterator[Node]:
    """Every node of the filter and of the segments it refers to, each segment once."""
    pending, seen = [filters], set()
    while pending:
        root = _read(pending.pop())
        for node in walk(root) if root is not None else ():
            yield node
            for ref in node.segment_refs():
                if ref not in seen:
                    seen.add(ref)
                    found = segment_filters(ref)
                    if found is not None:
                        pending.append(found)


def uses_relative_time(
    filters: Mapping[str, Any] | Node,
    segment_filters: Callable[[Any], Mapping[str, Any] | None],
) -> bool:
    """True when membership can change with the clock alone (relative windows,
    durations), here or in a segment it refers to."""
    return any(node.uses_clock() for node in _nodes_through_references(filters, segment_filters))


def earliest_event(
    filters: Mapping[str, Any] | Node,
    segment_filters: Callable[[Any], Mapping[str, Any] | None],
    now: datetime,
) -> datetime | None:
    """The earliest ``occurred_at`` the filter reads at ``now``, here or in a segment it
    refers to (:data:`~flask_engage.values.EARLIEST`: all events); None when it reads
    no events."""
    reaches = [
        reach
        for node in _nodes_through_references(filters, segment_filters)
        if (reach := node.earliest_event(now)) is not None
    ]
    return min(reaches, default=None)


def json_schema(max_list_values: int | None = None) -> dict[str, Any]:
    """The filter format as JSON Schema (draft 2020-12), for the admin and API clients.

    ``x-engage`` carries what the builder shows (labels, groupings, node kinds).
    ``max_list_values`` defaults to the app's ``ENGAGE_MAX_LIST_VALUES``.
    """
    if max_list_values is None:
        config = current_app.config if has_app_context() else DEFAULTS
        max_list_values = int(
            config.get("ENGAGE_MAX_LIST_VALUES", DEFAULTS["ENGAGE_MAX_LIST_VALUES"])
        )
    number = {"type": "number", "minimum": MIN_INT64, "maximum": MAX_INT64}
    defs: dict[str, Any] = {
        "filter": {"oneOf": [{"$ref": f"#/$defs/{key}"} for key in kind_keys()]},
        "number": number,
        "scalar": {"type": ["string", "number", "boolean"], "minimum": MIN_INT64,
                   "maximum": MAX_INT64},
        "duration": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": False,
            "properties": {
                unit: {"type": "number", "minimum": 0, "maximum": MAX_DAYS * per_day}
                for unit, per_day in DURATION_UNITS.items()
            },
        },
    }  # fmt: skip
    for kind in kinds():
        defs.update(kind.schema(max_list_values))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "flask-engage/segment-filter",
        "$ref": "#/$defs/filter",
        "$defs": defs,
        "x-engage": {
            "kinds": [
                {"name": kind.name, "label": kind.label, "keys": list(kind.keys),
                 **kind.annotation()}
                for kind in kinds()
            ],
            **operators.builder_hints(),
            **windows.builder_hints(),
        },
    }  # fmt: skip
