"""Filter nodes: one class per node kind, and the registry that reads a filter.

Each kind (``all``/``any``, ``not``, ``attribute``, ``event``, ``segment``,
``channel``, ``list``) says in one place how it is checked (:meth:`Node.parse`, errors naming
the path), its JSON Schema (:meth:`Node.schema`), how it compiles to SQL
(:meth:`Node.compile`), its children for tree walks, whether it moves with the
clock, and how the admin's builder shows it (:meth:`Node.annotation`). Validation,
the served JSON Schema, the compiler and the tree walkers in :mod:`.schema` are
generic over :func:`kinds`: a new kind is one class here plus :func:`register`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    ColumnElement,
    Float,
    and_,
    case,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)

from ..changes import ANYTHING
from ..channels import get_channel, opt_out_channels
from ..models import (
    Customer,
    CustomerList,
    Event,
    ListMember,
    ListMemberStatus,
    Unsubscription,
)
from ..values import EARLIEST, row_id
from . import windows
from .fields import ColumnField, Field, two_valued
from .operators import Comparison, comparison_schema
from .parsing import Parser
from .windows import Window

if TYPE_CHECKING:
    from .compiler import Compiler

customers = Customer.__table__
events = Event.__table__
lists = CustomerList.__table__
list_members = ListMember.__table__


class Node(ABC):
    """One node of a filter tree. Subclass, then :func:`register` the class."""

    #: The JSON keys that mark this kind (``("attribute",)``; ``("all", "any")``).
    keys: ClassVar[tuple[str, ...]]
    #: What the builder calls it (``add-<name>`` buttons, ``<name>-condition`` boxes).
    name: ClassVar[str]
    label: ClassVar[str]

    @classmethod
    @abstractmethod
    def parse(cls, parser: Parser, node: Mapping[str, Any], path: str, depth: int) -> Node:
        """Check the JSON object ``node`` at ``path``; raise ``parser.fail(...)``."""

    @abstractmethod
    def compile(self, compiler: Compiler) -> ColumnElement[bool]:
        """The SQL condition on ``engage_customers``."""

    @abstractmethod
    def to_json(self) -> dict[str, Any]:
        """The normalized JSON form."""

    @classmethod
    @abstractmethod
    def schema(cls, max_list_values: int) -> dict[str, dict[str, Any]]:
        """JSON Schema definitions: one named after each of :attr:`keys`, plus helpers."""

    @classmethod
    @abstractmethod
    def annotation(cls) -> dict[str, Any]:
        """How the builder shows it: ``form``, a ``new`` node, choices... Anything
        ordered is a list (a JSON provider may sort object keys)."""

    def children(self) -> Sequence[Node]:
        """Nested filter nodes (for tree walks)."""
        return ()

    def uses_clock(self) -> bool:
        """Whether this node alone can change its answer as time passes."""
        return False

    def segment_refs(self) -> Sequence[int | str]:
        """Segments this node refers to directly (by id or slug)."""
        return ()

    def earliest_event(self, now: datetime) -> datetime | None:
        """The earliest ``occurred_at`` of the events this node alone reads at ``now``
        (:data:`~flask_engage.values.EARLIEST`: all of them); None when it reads none."""
        return None

    def inputs(self) -> Sequence[str]:
        """What customer data this node alone reads, as tokens (``attribute:plan``,
        ``event:Purchase``, ``list``, ``channel``); incremental evaluation re-checks a
        segment only when one of them changed. A kind that does not say reads
        anything (``*``)."""
        return (ANYTHING,)



_registry: dict[str, type[Node]] = {}


def register(kind: type[Node]) -> type[Node]:
    """Add a node kind under each of its keys (tried in registration order)."""
    for key in kind.keys:
        _registry[key] = kind
    return kind


def kinds() -> list[type[Node]]:
    """Every registered kind, once each, in registration order."""
    return list(dict.fromkeys(_registry.values()))


def kind_keys() -> tuple[str, ...]:
    """Every key that marks a kind (``all``, ``any``, ``not``, ``attribute``...)."""
    return tuple(_registry)


def parse_node(parser: Parser, node: Any, path: str, depth: int = 0) -> Node:
    """Check one filter node of any kind."""
    parser.enter(path, depth)
    found = parser.obj(node, path)
    for key, kind in _registry.items():
        if key in found:
            return kind.parse(parser, found, path, depth)
    raise parser.fail(path, f"expected one of {', '.join(repr(k) for k in _registry)}")


def walk(node: Node) -> list[Node]:
    """``node`` and every node nested in it (not through segment references)."""
    found, stack = [], [node]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(current.children())
    return found


# -- all / any / not ---------------------------------------------------------------------
#: Longest AND/OR chain compiled flat. SQLite parses a chain as a tree one level per
#: term and refuses depth 1000 ("Expression tree is too large"): wider groups are
#: compiled as nested chunks.
CHAIN = 32


def _chained(combine: Any, parts: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    while len(parts) > CHAIN:
        parts = [two_valued(combine(*parts[i : i + CHAIN])) for i in range(0, len(parts), CHAIN)]
    return combine(*parts)


@dataclass(frozen=True)
class Group(Node):
    """``{"all": [...]}`` (and; empty: everyone) or ``{"any": [...]}`` (or; empty: no one)."""

    keys = ("all", "any")
    name = "group"
    label = "Group"

    key: str
    items: tuple[Node, ...]

    @classmethod
    def parse(cls, parser: Parser, node: Mapping[str, Any], path: str, depth: int) -> Node:
        key = "all" if "all" in node else "any"
        parser.only(node, path, {key})
        items = node[key]
        if not isinstance(items, list):
            raise parser.fail(f"{path}.{key}", "expected a list of filters")
        return cls(
            key,
            tuple(
                parse_node(parser, c, f"{path}.{key}[{i}]", depth + 1) for i, c in enumerate(items)
            ),
        )

    def compile(self, compiler: Compiler) -> ColumnElement[bool]:
        parts = [compiler.condition(item) for item in self.items]
        if not parts:
            return true() if self.key == "all" else false()
        return _chained(and_ if self.key == "all" else or_, parts)

    def to_json(self) -> dict[str, Any]:
        return {self.key: [item.to_json() for item in self.items]}

    def children(self) -> Sequence[Node]:
        return self.items

    def inputs(self) -> Sequence[str]:
        return ()

    @classmethod
    def schema(cls, max_list_values: int) -> dict[str, dict[str, Any]]:
        return {
            key: {
                "type": "object",
                "required": [key],
                "additionalProperties": False,
                "properties": {key: {"type": "array", "items": {"$ref": "#/$defs/filter"}}},
            }
            for key in cls.keys
        }

    @classmethod
    def annotation(cls) -> dict[str, Any]:
        return {
            "form": "group",
            "new": {"any": []},
            "labels": {"all": "All of these", "any": "Any of these"},
        }


@dataclass(frozen=True)
class Not(Node):
    """``{"not": FILTER}``."""

    keys = ("not",)
    name = "not"
    label = "Not"

    item: Node

    @classmethod
    def parse(cls, parser: Parser, node: Mapping[str, Any], path: str, depth: int) -> Node:
        parser.only(node, path, {"not"})
        return cls(parse_node(parser, node["not"], f"{path}.not", depth + 1))

    def compile(self, compiler: Compiler) -> ColumnElement[bool]:
        return not_(compiler.condition(self.item))

    def to_json(self) -> dict[str, Any]:
        return {"not": self.item.to_json()}

    def children(self) -> Sequence[Node]:
        return (self.item,)

    def inputs(self) -> Sequence[str]:
        return ()

    @classmethod
    def schema(cls, max_list_values: int) -> dict[str, dict[str, Any]]:
        return {
            "not": {
                "type": "object",
                "required": ["not"],
                "additionalProperties": False,
                "properties": {"not": {"$ref": "#/$defs/filter"}},
            }
        }

    @classmethod
    def annotation(cls) -> dict[str, Any]:
        return {"form": "not"}


# -- attributes --------------------------------------------------------------------------
@dataclass(frozen=True)
class Attribute(Node):
    """``{"attribute": NAME, "op": OP, "value": V}`` (``email`` is the customer's email)."""

    keys = ("attribute",)
    name = "attribute"
    label = "Attribute"

    comparison: Comparison

    @classmethod
    def parse(cls, parser: Parser, node: Mapping[str, Any], path: str, depth: int) -> Node:
        return cls(Comparison.parse(parser, node, path, "attribute"))

    def compile(self, compiler: Compiler) -> ColumnElement[bool]:
        name = self.comparison.name
        if name == "email":
            field: Field = ColumnField(customers.c.email, compiler.dialect)
            recorded: str | None = "string"
        else:
            field = Field(customers.c.attributes, name, compiler.dialect)
            recorded = compiler.attribute_types.get(name)
        return self.comparison.compile(compiler, field, recorded)

    def to_json(self) -> dict[str, Any]:
        return self.comparison.to_json()

    def uses_clock(self) -> bool:
        return self.comparison.uses_clock

    def inputs(self) -> Sequence[str]:
        return (f"attribute:{self.comparison.name}",)

    @classmethod
    def schema(cls, max_list_values: int) -> dict[str, dict[str, Any]]:
        return {"attribute": comparison_schema("attribute", max_list_values)}

    @classmethod
    def annotation(cls) -> dict[str, Any]:
        return {
            "form": "comparison",
            "new": {"attribute": "", "op": "eq", "value": ""},
            "names": "attributes",
        }


# -- events ------------------------------------------------------------------------------
MEASURES = {
    "count": "count",
    "sum": "sum of",
    "avg": "average of",
    "min": "min of",
    "max": "max of",
}
AGGREGATES = ("sum", "avg", "min", "max")
NUMERIC_OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "between")
#: The largest finite double: a sum or average beyond it has overflowed.
_LARGEST = 1.7976931348623157e308
#: Sums add values scaled by this power of two (exact): 2**32 values of the largest
#: double fit. A value below 2**-1042 (a denormal, < 2.3e-314) underflows to 0 when
#: scaled, which PostgreSQL reports as an error for the segment.
_SCALE = 2.0**-32


@dataclass(frozen=True)
class Measure:
    """What an event condition measures (``count``, or an aggregate of a property) and
    the threshold it must meet."""

    kind: str
    op: str
    value: Any
    property: str | None = None

    @classmethod
    def parse(cls, parser: Parser, node: Mapping[str, Any], path: str) -> Measure:
        """The measure of the event condition ``node`` (default: done at least once)."""
        present = [key for key in MEASURES if key in node]
        if len(present) > 1:
            raise parser.fail(
                f"{path}.{present[1]}", f"use only one of count, {', '.join(AGGREGATES)}"
            )
        kind = present[0] if present else "count"
        spec = node.get(kind, {"op": "gte", "value": 1})
        sub = f"{path}.{kind}"
        if not isinstance(spec, dict):
            raise parser.fail(sub, "expected an object with 'op' and 'value'")
        parser.only(spec, sub, {"op", "value"} | ({"property"} if kind != "count" else set()))
        op = spec.get("op")
        if op not in NUMERIC_OPS:
            raise parser.fail(
                f"{sub}.op", f"unknown operator {op!r}; expected one of {', '.join(NUMERIC_OPS)}"
            )
        value = spec.get("value")
        if op == "between":
            if not isinstance(value, list) or len(value) != 2:
                raise parser.fail(f"{sub}.value", "expected [low, high]")
            value = [parser.number(v, f"{sub}.value[{i}]") for i, v in enumerate(value)]
        else:
            value = parser.number(value, f"{sub}.value")
        prop = None if kind == "count" else parser.name(spec.get("property"), f"{sub}.property")
        return cls(kind, op, value, prop)

    def holds(self, amount: float) -> bool:
        """Whether ``amount`` meets the threshold (in Python: to spot zero-matching ones)."""
        low, high = self.value if self.op == "between" else (self.value, self.value)
        return {
            "eq": amount == low,
            "ne": amount != low,
            "gt": amount > low,
            "gte": amount >= low,
            "lt": amount < low,
            "lte": amount <= low,
            "between": low <= amount <= high,
        }[self.op]

    def aggregate(self, dialect: str) -> ColumnElement[Any]:
        """The measured amount per customer group; NULL when a sum or average overflows
        a double (so it matches no threshold, on both databases)."""
        if self.kind == "count":
            return func.count()
        field = Field(events.c.properties, self.property or "", dialect)
        if self.kind in ("min", "max"):
            return getattr(func, self.kind)(field.number())
        # Doubles, added up scaled down by 2**32: the scaled sum cannot overflow (which
        # PostgreSQL raises as an error), and scaling by a power of two is exact, so
        # the sum is the same double as an unscaled one. Much cheaper than ``numeric``.
        total: ColumnElement[Any] = func.sum(field.number() * literal(_SCALE, Float))
        if self.kind == "sum":
            total = func.coalesce(total, literal(0.0, Float))
        amount = total * literal(1 / _SCALE, Float)
        if self.kind == "avg":
            amount = amount / func.count(field.number())
        return case((func.abs(total) <= literal(_LARGEST * _SCALE, Float), amount))

    def test(self, amount: ColumnElement[Any]) -> ColumnElement[bool]:
        """SQL: ``amount`` meets the threshold (two-valued)."""
        if self.op == "between":
            low, high = (literal(float(v), Float) for v in self.value)
            return two_valued(and_(amount >= low, amount <= high))
        value = literal(float(self.value), Float)
        return two_valued(
            {
                "eq": amount == value,
                "ne": amount != value,
                "gt": amount > value,
                "gte": amount >= value,
                "lt": amount < value,
                "lte": amount <= value,
            }[self.op]
        )

    def to_json(self) -> dict[str, Any]:
        """``{KIND: {"op", "value", "property"?}}``."""
        spec: dict[str, Any] = {"op": self.op, "value": self.value}
        if self.property is not None:
            spec["property"] = self.property
        return {self.kind: spec}


@dataclass(frozen=True)
class EventCondition(Node):
    """``{"event": NAME, "where": [...], "window": {...}, MEASURE: {...}}``."""

    keys = ("event",)
    name = "event"
    label = "Event"

    event: str
    where: tuple[Comparison, ...]
    window: Window | None
    measure: Measure

    @classmethod
    def parse(cls, parser: Parser, node: Mapping[str, Any], path: str, depth: int) -> Node:
        parser.only(node, path, {"event", "where", "window", *MEASURES})
        event = parser.name(node.get("event"), f"{path}.event")
        where = node.get("where", [])
        if not isinstance(where, list):
            raise parser.fail(f"{path}.where", "expected a list of property conditions")
        rows = []
        for i, row in enumerate(where):
            sub = f"{path}.where[{i}]"
            parser.enter(sub, depth)
            rows.append(Comparison.parse(parser, parser.obj(row, sub), sub, "property"))
        window = node.get("window")
        return cls(
            event,
            tuple(rows),
            None if window is None else Window.parse(parser, window, f"{path}.window"),
            Measure.parse(parser, node, path),
        )

    def compile(self, compiler: Compiler) -> ColumnElement[bool]:
        conditions = [events.c.name == self.event, *compiler.event_scope()]
        if self.window is not None:
            conditions.extend(self.window.conditions(compiler))
        for row in self.where:
            field = Field(events.c.properties, row.name, compiler.dialect)
            conditions.append(row.compile(compiler, field))
        measure = self.measure
        grouped = select(events.c.customer_id).where(*conditions)
        if measure.kind == "count" and measure.holds(0) != measure.holds(1):
            # Whether any event exists decides: no grouping, a (anti) semi-join.
            any_event = exists(grouped.where(events.c.customer_id == customers.c.id))
            if measure.op in ("gt", "gte"):  # "at least once"
                return any_event
            if measure.holds(0) and measure.op != "ne":  # "never": holds for 0 only
                return ~any_event
        predicate = measure.test(measure.aggregate(compiler.dialect))
        if measure.kind in ("count", "sum") and measure.holds(0):
            # Holds for customers with no events: exclude those whose total fails.
            failing = grouped.group_by(events.c.customer_id).having(not_(predicate)).subquery()
            return not_(
                exists(
                    select(1).select_from(failing).where(failing.c.customer_id == customers.c.id)
                )
            )
        return customers.c.id.in_(grouped.group_by(events.c.customer_id).having(predicate))

    def to_json(self) -> dict[str, Any]:
        node: dict[str, Any] = {"event": self.event}
        if self.where:
            node["where"] = [row.to_json() for row in self.where]
        if self.window is not None:
            node["window"] = self.window.to_json()
        node.update(self.measure.to_json())
        return node

    def earliest_event(self, now: datetime) -> datetime | None:
        return EARLIEST if self.window is None else self.window.earliest(now)

    def uses_clock(self) -> bool:
        return (self.window is not None and self.window.kind.relative) or any(
            row.uses_clock for row in self.where
        )

    def inputs(self) -> Sequence[str]:
        return (f"event:{self.event}",)

    @classmethod
    def schema(cls, max_list_values: int) -> dict[str, dict[str, Any]]:
        number = {"$ref": "#/$defs/number"}
        measure = {
            "type": "object",
            "required": ["op", "value"],
            "additionalProperties": False,
            "properties": {
                "op": {"enum": list(NUMERIC_OPS)},
                "value": {
                    "anyOf": [
                        number,
                        {"type": "array", "items": number, "minItems": 2, "maxItems": 2},
                    ]
                },
                "property": {"type": "string", "minLength": 1, "maxLength": 128},
            },
        }
        return {
            "event": {
                "type": "object",
                "required": ["event"],
                "additionalProperties": False,
                "properties": {
                    "event": {"type": "string", "minLength": 1, "maxLength": 128},
                    "where": {"type": "array", "items": {"$ref": "#/$defs/property"}},
                    "window": {"$ref": "#/$defs/window"},
                    **{kind: {"$ref": "#/$defs/measure"} for kind in MEASURES},
                },
            },
            "property": comparison_schema("property", max_list_values),
            "window": windows.schema(),
            "measure": measure,
        }

    @classmethod
    def annotation(cls) -> dict[str, Any]:
        return {
            "form": "event",
            "new": {"event": "", "count": {"op": "gte", "value": 1}},
            "measures": [{"value": kind, "label": label} for kind, label in MEASURES.items()],
        }


# -- segments and channels -----------------------------------------------------------------
def _membership_schema(key: str) -> dict[str, dict[str, Any]]:
    """``{KEY: ID_OR_SLUG, "op": "in" | "not_in"}``: the shape of segment and list conditions."""
    return {
        key: {
            "type": "object",
            "required": [key],
            "additionalProperties": False,
            "properties": {
                key: {"type": ["string", "integer"], "minLength": 1},
                "op": {"enum": ["in", "not_in"]},
            },
        }
    }


@dataclass(frozen=True)
class SegmentCondition(Node):
    """``{"segment": ID_OR_SLUG, "op": "in" | "not_in"}``: membership of another segment,
    evaluated from that segment's own filter."""

    keys = ("segment",)
    name = "segment"
    label = "Segment"

    ref: int | str
    op: str

    @classmethod
    def parse(cls, parser: Parser, node: Mapping[str, Any], path: str, depth: int) -> Node:
        parser.only(node, path, {"segment", "op"})
        op = node.get("op", "in")
        if op not in ("in", "not_in"):
            raise parser.fail(f"{path}.op", f"unknown operator {op!r}; expected 'in' or 'not_in'")
        ref = node.get("segment")
        if isinstance(ref, bool) or not isinstance(ref, int | str) or ref == "":
            raise parser.fail(f"{path}.segment", "expected a segment id or slug")
        lookup = parser.lookups.get("segment")
        if lookup is None:
            return cls(ref, op)
        found = lookup(ref)
        if found is None:
            raise parser.fail(f"{path}.segment", f"no segment {ref!r}")
        seg_id, slug, filters = found
        if slug == parser.self_slug or slug in parser.chain:
            raise parser.fail(f"{path}.segment", f"segment {slug!r} would refer to itself (cycle)")
        # Walk the referenced filter for cycles through it (it was checked when saved).
        inner = Parser(parser.lookups, parser.self_slug, None, (*parser.chain, slug))
        parse_node(inner, filters, f"{path}<{slug}>")
        return cls(seg_id, op)

    def compile(self, compiler: Compiler) -> ColumnElement[bool]:
        filters = compiler.segment_filters(self.ref)
        inside = false() if filters is None else compiler.condition(filters)
        return not_(inside) if self.op == "not_in" else inside

    def to_json(self) -> dict[str, Any]:
        return {"segment": self.ref, "op": self.op}

    def segment_refs(self) -> Sequence[int | str]:
        return (self.ref,)

    def inputs(self) -> Sequence[str]:
        return ()  # what the referenced segment reads (followed by the caller)

    @classmethod
    def schema(cls, max_list_values: int) -> dict[str, dict[str, Any]]:
        return _membership_schema("segment")

    @classmethod
    def annotation(cls) -> dict[str, Any]:
        return {
            "form": "choice",
            "new": {"segment": "all", "op": "in"},
            "sentence": ["Customer", "{op}", "segment", "{segment}"],
            "choices": {
                "op": [
                    {"value": "in", "label": "is in"},
                    {"value": "not_in", "label": "is not in"},
                ],
                "segment": "segments",
            },
        }


@dataclass(frozen=True)
class ChannelCondition(Node):
    """``{"channel": NAME, "op": "subscribed" | "unsubscribed"}`` for the channels
    customers can opt out of (:func:`~flask_engage.channels.opt_out_channels`)."""

    keys = ("channel",)
    name = "channel"
    label = "Channel"

    channel: str
    op: str

    @classmethod
    def parse(cls, parser: Parser, node: Mapping[str, Any], path: str, depth: int) -> Node:
        parser.only(node, path, {"channel", "op"})
        channel = parser.choice(node.get("channel"), f"{path}.channel", opt_out_channels())
        op = node.get("op", "subscribed")
        if op not in ("subscribed", "unsubscribed"):
            raise parser.fail(f"{path}.op", "expected 'subscribed' or 'unsubscribed'")
        return cls(channel, op)

    def compile(self, compiler: Compiler) -> ColumnElement[bool]:
        opted_out = exists(
            select(1).where(
                Unsubscription.customer_id == customers.c.id,
                Unsubscription.channel == self.channel,
            )
        )
        if self.op == "unsubscribed":
            return opted_out
        return and_(get_channel(self.channel).reachable(), not_(opted_out))

    def to_json(self) -> dict[str, Any]:
        return {"channel": self.channel, "op": self.op}

    def inputs(self) -> Sequence[str]:
        # Opt-outs, and what the channel's address (reachable()) reads.
        return ("channel", *get_channel(self.channel).reads())

    @classmethod
    def schema(cls, max_list_values: int) -> dict[str, dict[str, Any]]:
        return {
            "channel": {
                "type": "object",
                "required": ["channel"],
                "additionalProperties": False,
                "properties": {
                    "channel": {"enum": list(opt_out_channels())},
                    "op": {"enum": ["subscribed", "unsubscribed"]},
                },
            }
        }

    @classmethod
    def annotation(cls) -> dict[str, Any]:
        return {
            "form": "choice",
            "new": {"channel": opt_out_channels()[0], "op": "subscribed"},
            "sentence": ["Channel", "{channel}", "is", "{op}"],
            "choices": {
                "channel": [
                    {"value": name, "label": get_channel(name).label} for name in opt_out_channels()
                ],
                "op": [
                    {"value": "subscribed", "label": "subscribed"},
                    {"value": "unsubscribed", "label": "unsubscribed"},
                ],
            },
        }


# -- lists ---------------------------------------------------------------------------------
def _list_id(ref: int | str) -> ColumnElement[Any]:
    """SQL for the id of the list ``ref`` names: an id, or a slug (an id first when
    it is all digits, as lookups read it); NULL when there is no such list."""
    if isinstance(ref, int):
        return literal(ref)
    by_slug = select(lists.c.id).where(lists.c.slug == ref).scalar_subquery()
    list_id = row_id(ref)
    if list_id is None:
        return by_slug
    by_id = select(lists.c.id).where(lists.c.id == list_id).scalar_subquery()
    return func.coalesce(by_id, by_slug)


@dataclass(frozen=True)
class ListCondition(Node):
    """``{"list": ID_OR_SLUG, "op": "in" | "not_in"}``: a subscribed member of a list
    (pending and unsubscribed members are not in it)."""

    keys = ("list",)
    name = "list"
    label = "List"

    ref: int | str
    op: str

    @classmethod
    def parse(cls, parser: Parser, node: Mapping[str, Any], path: str, depth: int) -> Node:
        parser.only(node, path, {"list", "op"})
        op = node.get("op", "in")
        if op not in ("in", "not_in"):
            raise parser.fail(f"{path}.op", f"unknown operator {op!r}; expected 'in' or 'not_in'")
        ref = node.get("list")
        if isinstance(ref, bool) or not isinstance(ref, int | str) or ref == "":
            raise parser.fail(f"{path}.list", "expected a list id or slug")
        lookup = parser.lookups.get("list")
        if lookup is None:
            return cls(ref, op)
        found = lookup(ref)
        if found is None:
            raise parser.fail(f"{path}.list", f"no list {ref!r}")
        return cls(found, op)

    def compile(self, compiler: Compiler) -> ColumnElement[bool]:
        inside = exists(
            select(1).where(
                list_members.c.customer_id == customers.c.id,
                list_members.c.list_id == _list_id(self.ref),
                list_members.c.status == ListMemberStatus.SUBSCRIBED.value,
            )
        )
        return not_(inside) if self.op == "not_in" else inside

    def to_json(self) -> dict[str, Any]:
        return {"list": self.ref, "op": self.op}

    def inputs(self) -> Sequence[str]:
        return ("list",)

    @classmethod
    def schema(cls, max_list_values: int) -> dict[str, dict[str, Any]]:
        return _membership_schema("list")

    @classmethod
    def annotation(cls) -> dict[str, Any]:
        return {
            "form": "choice",
            "new": {"list": "", "op": "in"},
            "sentence": ["Customer", "{op}", "list", "{list}"],
            "choices": {
                "op": [
                    {"value": "in", "label": "is subscribed to"},
                    {"value": "not_in", "label": "is not subscribed to"},
                ],
                "list": "lists",
            },
        }


register(Group)
register(Not)
register(Attribute)
register(EventCondition)
register(SegmentCondition)
register(ChannelCondition)
register(ListCondition)
