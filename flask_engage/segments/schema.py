"""Segment filters: validation with paths, and the JSON Schema of the format.

A filter is a tree (see ``DESIGN.md``)::

    FILTER    := {"all": [...]} | {"any": [...]} | {"not": FILTER} | CONDITION
    CONDITION := ATTRIBUTE | EVENT | SEGMENT | CHANNEL

:func:`validate_filter` returns a normalized copy (datetimes in their stored form)
or raises :class:`~flask_engage.errors.InvalidFilter` whose message starts with the
path of the bad node, e.g. ``filters.all[2].op: unknown operator 'equals'``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..channels import opt_out_channels
from ..errors import InvalidFilter, ValidationError
from ..values import check_name, format_datetime, looks_like_datetime, parse_datetime

OPERATORS = (
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "between",
    "in",
    "not_in",
    "contains",
    "not_contains",
    "starts_with",
    "ends_with",
    "exists",
    "not_exists",
    "is_true",
    "is_false",
    "within_last",
    "more_than_ago",
)
NO_VALUE = {"exists", "not_exists", "is_true", "is_false"}
LIST_VALUE = {"in", "not_in"}
TEXT_VALUE = {"contains", "not_contains", "starts_with", "ends_with"}
DURATION_VALUE = {"within_last", "more_than_ago"}
ORDER_VALUE = {"gt", "gte", "lt", "lte"}
NUMERIC_OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "between")
AGGREGATES = ("sum", "avg", "min", "max")
CALENDAR = ("today", "this_week", "this_month", "last_month")
WINDOW_KINDS = (
    "last_days",
    "last_hours",
    "older_than_days",
    "since",
    "until",
    "between",
    "calendar",
)
RELATIVE_WINDOWS = {"last_days", "last_hours", "older_than_days", "calendar"}
MAX_DEPTH = 20
MAX_NODES = 500

#: Finds a segment's filters by id or slug, for SEGMENT conditions.
SegmentLookup = Callable[[int | str], "tuple[int, str, dict[str, Any]] | None"]


class _Validator:
    def __init__(self, lookup: SegmentLookup | None, self_slug: str | None) -> None:
        self.lookup = lookup
        self.self_slug = self_slug
        self.nodes = 0

    def fail(self, path: str, message: str) -> InvalidFilter:
        return InvalidFilter(f"{path}: {message}", field=path)

    def node(self, node: Any, path: str, depth: int, chain: tuple[str, ...]) -> dict[str, Any]:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(path, f"filter has more than {MAX_NODES} nodes")
        if depth > MAX_DEPTH:
            raise self.fail(path, f"filter is nested deeper than {MAX_DEPTH} levels")
        if not isinstance(node, dict):
            raise self.fail(path, f"expected an object, got {type(node).__name__}")
        if "all" in node or "any" in node:
            key = "all" if "all" in node else "any"
            self.only(node, path, {key})
            children = node[key]
            if not isinstance(children, list):
                raise self.fail(f"{path}.{key}", "expected a list of filters")
            return {
                key: [
                    self.node(c, f"{path}.{key}[{i}]", depth + 1, chain)
                    for i, c in enumerate(children)
                ]
            }
        if "not" in node:
            self.only(node, path, {"not"})
            return {"not": self.node(node["not"], f"{path}.not", depth + 1, chain)}
        if "attribute" in node:
            return self.attribute(node, path)
        if "event" in node:
            return self.event(node, path)
        if "segment" in node:
            return self.segment(node, path, chain)
        if "channel" in node:
            return self.channel(node, path)
        raise self.fail(
            path, "expected one of 'all', 'any', 'not', 'attribute', 'event', 'segment', 'channel'"
        )

    def only(self, node: dict[str, Any], path: str, allowed: set[str]) -> None:
        extra = sorted(set(node) - allowed)
        if extra:
            raise self.fail(f"{path}.{extra[0]}", "unknown field")

    def name(self, value: Any, path: str) -> str:
        try:
            return check_name(value, path)
        except ValidationError as exc:
            raise InvalidFilter(str(exc), field=path) from None

    def comparison(self, node: dict[str, Any], path: str, subject: str) -> dict[str, Any]:
        self.only(node, path, {subject, "op", "value"})
        result = {subject: self.name(node.get(subject), f"{path}.{subject}")}
        op = node.get("op")
        if op not in OPERATORS:
            raise self.fail(
                f"{path}.op", f"unknown operator {op!r}; expected one of {', '.join(OPERATORS)}"
            )
        result["op"] = op
        if op in NO_VALUE:
            if node.get("value") is not None:
                raise self.fail(f"{path}.value", f"operator {op!r} takes no value")
            return result
        if "value" not in node:
            raise self.fail(f"{path}.value", f"operator {op!r} needs a value")
        result["value"] = self.operand(op, node["value"], f"{path}.value")
        return result

    def operand(self, op: str, value: Any, path: str) -> Any:
        if op in LIST_VALUE:
            if not isinstance(value, list) or not value:
                raise self.fail(path, f"operator {op!r} needs a non-empty list")
            return [self.scalar(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if op == "between":
            if not isinstance(value, list) or len(value) != 2:
                raise self.fail(path, "operator 'between' needs a list of two values [low, high]")
            low, high = (self.scalar(v, f"{path}[{i}]") for i, v in enumerate(value))
            if (
                isinstance(low, bool)
                or isinstance(high, bool)
                or type(low) is not type(high)
                and not (isinstance(low, int | float) and isinstance(high, int | float))
            ):
                raise self.fail(path, "'between' needs two numbers or two datetimes")
            if isinstance(low, str) and not (
                looks_like_datetime(low) and looks_like_datetime(high)
            ):
                raise self.fail(path, "'between' needs two numbers or two datetimes")
            return [low, high]
        if op in TEXT_VALUE:
            if not isinstance(value, str) or value == "":
                raise self.fail(path, f"operator {op!r} needs a non-empty string")
            return value
        if op in DURATION_VALUE:
            return self.duration(value, path)
        scalar = self.scalar(value, path)
        if op in ORDER_VALUE and (isinstance(scalar, bool) or scalar is None):
            raise self.fail(path, f"operator {op!r} needs a number, a string or a datetime")
        return scalar

    def scalar(self, value: Any, path: str) -> Any:
        if isinstance(value, bool) or isinstance(value, int | float):
            if isinstance(value, float) and value != value:
                raise self.fail(path, "NaN is not a value")
            return value
        if isinstance(value, str):
            if looks_like_datetime(value):
                try:
                    return format_datetime(parse_datetime(value, path))
                except ValidationError:
                    return value
            return value
        raise self.fail(path, f"expected a string, number or boolean, got {type(value).__name__}")

    def duration(self, value: Any, path: str) -> dict[str, float]:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = {"days": value}
        if not isinstance(value, dict) or not value or set(value) - {"days", "hours", "minutes"}:
            raise self.fail(path, "expected a number of days or {'days'|'hours'|'minutes': N}")
        for unit, amount in value.items():
            if isinstance(amount, bool) or not isinstance(amount, int | float) or amount < 0:
                raise self.fail(f"{path}.{unit}", "expected a number >= 0")
        return dict(value)

    def number(self, value: Any, path: str) -> float | int:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise self.fail(path, "expected a number")
        return value

    def attribute(self, node: dict[str, Any], path: str) -> dict[str, Any]:
        return self.comparison(node, path, "attribute")

    def event(self, node: dict[str, Any], path: str) -> dict[str, Any]:
        self.only(node, path, {"event", "where", "window", "count", *AGGREGATES})
        result: dict[str, Any] = {"event": self.name(node.get("event"), f"{path}.event")}
        where = node.get("where", [])
        if not isinstance(where, list):
            raise self.fail(f"{path}.where", "expected a list of property conditions")
        if where:
            result["where"] = [
                self.comparison(p if isinstance(p, dict) else {}, f"{path}.where[{i}]", "property")
                if isinstance(p, dict)
                else self._not_object(f"{path}.where[{i}]", p)
                for i, p in enumerate(where)
            ]
        if node.get("window") is not None:
            result["window"] = self.window(node["window"], f"{path}.window")
        measures = [key for key in ("count", *AGGREGATES) if key in node]
        if len(measures) > 1:
            raise self.fail(
                f"{path}.{measures[1]}", f"use only one of count, {', '.join(AGGREGATES)}"
            )
        measure = measures[0] if measures else "count"
        spec = node.get(measure, {"op": "gte", "value": 1})
        mpath = f"{path}.{measure}"
        if not isinstance(spec, dict):
            raise self.fail(mpath, "expected an object with 'op' and 'value'")
        allowed = {"op", "value"} | ({"property"} if measure != "count" else set())
        self.only(spec, mpath, allowed)
        op = spec.get("op")
        if op not in NUMERIC_OPS:
            raise self.fail(
                f"{mpath}.op", f"unknown operator {op!r}; expected one of {', '.join(NUMERIC_OPS)}"
            )
        measured: dict[str, Any] = {"op": op}
        if op == "between":
            value = spec.get("value")
            if not isinstance(value, list) or len(value) != 2:
                raise self.fail(f"{mpath}.value", "expected [low, high]")
            measured["value"] = [self.number(v, f"{mpath}.value[{i}]") for i, v in enumerate(value)]
        else:
            measured["value"] = self.number(spec.get("value"), f"{mpath}.value")
        if measure != "count":
            measured["property"] = self.name(spec.get("property"), f"{mpath}.property")
        result[measure] = measured
        return result

    def _not_object(self, path: str, value: Any) -> dict[str, Any]:
        raise self.fail(path, f"expected an object, got {type(value).__name__}")

    def window(self, window: Any, path: str) -> dict[str, Any]:
        if not isinstance(window, dict) or len(window) != 1:
            raise self.fail(path, f"expected exactly one of {', '.join(WINDOW_KINDS)}")
        ((kind, value),) = window.items()
        if kind not in WINDOW_KINDS:
            raise self.fail(
                f"{path}.{kind}", f"unknown window; expected one of {', '.join(WINDOW_KINDS)}"
            )
        sub = f"{path}.{kind}"
        if kind in ("last_days", "last_hours", "older_than_days"):
            number = self.number(value, sub)
            if number < 0:
                raise self.fail(sub, "expected a number >= 0")
            return {kind: number}
        if kind == "calendar":
            if value not in CALENDAR:
                raise self.fail(sub, f"expected one of {', '.join(CALENDAR)}")
            return {kind: value}
        if kind == "between":
            if not isinstance(value, list) or len(value) != 2:
                raise self.fail(sub, "expected [start, end] ISO datetimes")
            return {kind: [self.instant(v, f"{sub}[{i}]") for i, v in enumerate(value)]}
        return {kind: self.instant(value, sub)}

    def instant(self, value: Any, path: str) -> str:
        try:
            return parse_datetime(value, path).isoformat()
        except ValidationError:
            raise self.fail(path, f"expected an ISO 8601 datetime, got {value!r}") from None

    def segment(self, node: dict[str, Any], path: str, chain: tuple[str, ...]) -> dict[str, Any]:
        self.only(node, path, {"segment", "op"})
        op = node.get("op", "in")
        if op not in ("in", "not_in"):
            raise self.fail(f"{path}.op", f"unknown operator {op!r}; expected 'in' or 'not_in'")
        ref = node.get("segment")
        if isinstance(ref, bool) or not isinstance(ref, int | str) or ref == "":
            raise self.fail(f"{path}.segment", "expected a segment id or slug")
        if self.lookup is None:
            return {"segment": ref, "op": op}
        found = self.lookup(ref)
        if found is None:
            raise self.fail(f"{path}.segment", f"no segment {ref!r}")
        seg_id, slug, filters = found
        if slug == self.self_slug or slug in chain:
            raise self.fail(f"{path}.segment", f"segment {slug!r} would refer to itself (cycle)")
        # Walk the referenced filter to find cycles through it (its own refs are valid).
        _Validator(self.lookup, self.self_slug).node(filters, f"{path}<{slug}>", 0, (*chain, slug))
        return {"segment": seg_id, "op": op}

    def channel(self, node: dict[str, Any], path: str) -> dict[str, Any]:
        self.only(node, path, {"channel", "op"})
        if node.get("channel") not in opt_out_channels():
            raise self.fail(f"{path}.channel", f"expected one of {', '.join(opt_out_channels())}")
        if node.get("op", "subscribed") not in ("subscribed", "unsubscribed"):
            raise self.fail(f"{path}.op", "expected 'subscribed' or 'unsubscribed'")
        return {"channel": node["channel"], "op": node.get("op", "subscribed")}


def validate_filter(
    filters: Any,
    *,
    lookup: SegmentLookup | None = None,
    self_slug: str | None = None,
    path: str = "filters",
) -> dict[str, Any]:
    """Check a filter and return its normalized form (segment refs become ids).

    ``lookup`` resolves segment references; ``self_slug`` is the slug of the
    segment being saved, to reject cycles through it.
    """
    return _Validator(lookup, self_slug).node(filters, path, 0, ())


def referenced_segments(filters: dict[str, Any]) -> set[int | str]:
    """Ids (or slugs) of the segments a filter refers to directly."""
    found: set[int | str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "segment" in node:
                found.add(node["segment"])
            for key in ("all", "any"):
                for child in node.get(key, []):
                    walk(child)
            if "not" in node:
                walk(node["not"])

    walk(filters)
    return found


def uses_relative_time(
    filters: dict[str, Any], segment_filters: Callable[[Any], dict[str, Any] | None]
) -> bool:
    """True when membership can change with the clock alone (relative windows)."""

    def walk(node: Any) -> bool:
        if not isinstance(node, dict):
            return False
        if any(walk(child) for key in ("all", "any") for child in node.get(key, [])):
            return True
        if "not" in node:
            return walk(node["not"])
        if "event" in node:
            return bool(set(node.get("window") or {}) & RELATIVE_WINDOWS)
        if "attribute" in node:
            return node.get("op") in DURATION_VALUE
        if "segment" in node:
            return walk(segment_filters(node["segment"]))
        return False

    return walk(filters)


def json_schema() -> dict[str, Any]:
    """The filter format as JSON Schema (draft 2020-12), for the admin and API clients."""
    scalar = {"type": ["string", "number", "boolean"]}
    comparison = lambda subject: {  # noqa: E731
        "type": "object",
        "required": [subject, "op"],
        "additionalProperties": False,
        "properties": {
            subject: {"type": "string", "minLength": 1, "maxLength": 128},
            "op": {"enum": list(OPERATORS)},
            "value": {
                "anyOf": [
                    scalar,
                    {"type": "array", "items": scalar},
                    {
                        "type": "object",
                        "properties": {
                            "days": {"type": "number"},
                            "hours": {"type": "number"},
                            "minutes": {"type": "number"},
                        },
                    },
                ]
            },
        },
    }
    measure = {
        "type": "object",
        "required": ["op", "value"],
        "additionalProperties": False,
        "properties": {
            "op": {"enum": list(NUMERIC_OPS)},
            "value": {
                "anyOf": [
                    {"type": "number"},
                    {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
                ]
            },
            "property": {"type": "string"},
        },
    }
    window = {
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "properties": {
            "last_days": {"type": "number", "minimum": 0},
            "last_hours": {"type": "number", "minimum": 0},
            "older_than_days": {"type": "number", "minimum": 0},
            "since": {"type": "string", "format": "date-time"},
            "until": {"type": "string", "format": "date-time"},
            "between": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
            "calendar": {"enum": list(CALENDAR)},
        },
        "additionalProperties": False,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "flask-engage/segment-filter",
        "$ref": "#/$defs/filter",
        "$defs": {
            "filter": {
                "oneOf": [
                    {
                        "type": "object",
                        "required": ["all"],
                        "additionalProperties": False,
                        "properties": {
                            "all": {"type": "array", "items": {"$ref": "#/$defs/filter"}}
                        },
                    },
                    {
                        "type": "object",
                        "required": ["any"],
                        "additionalProperties": False,
                        "properties": {
                            "any": {"type": "array", "items": {"$ref": "#/$defs/filter"}}
                        },
                    },
                    {
                        "type": "object",
                        "required": ["not"],
                        "additionalProperties": False,
                        "properties": {"not": {"$ref": "#/$defs/filter"}},
                    },
                    {"$ref": "#/$defs/attribute"},
                    {"$ref": "#/$defs/event"},
                    {"$ref": "#/$defs/segment"},
                    {"$ref": "#/$defs/channel"},
                ]
            },
            "attribute": comparison("attribute"),
            "property": comparison("property"),
            "event": {
                "type": "object",
                "required": ["event"],
                "additionalProperties": False,
                "properties": {
                    "event": {"type": "string", "minLength": 1},
                    "where": {"type": "array", "items": {"$ref": "#/$defs/property"}},
                    "window": window,
                    "count": measure,
                    "sum": measure,
                    "avg": measure,
                    "min": measure,
                    "max": measure,
                },
            },
            "segment": {
                "type": "object",
                "required": ["segment"],
                "additionalProperties": False,
                "properties": {
                    "segment": {"type": ["string", "integer"]},
                    "op": {"enum": ["in", "not_in"]},
                },
            },
            "channel": {
                "type": "object",
                "required": ["channel"],
                "additionalProperties": False,
                "properties": {
                    "channel": {"enum": list(opt_out_channels())},
                    "op": {"enum": ["subscribed", "unsubscribed"]},
                },
            },
        },
    }
