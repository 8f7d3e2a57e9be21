"""Compile a validated filter into one SQL condition on the customers table.

The same compiler answers ``count`` (the builder's preview), full recomputes and
incremental evaluation of a few customers (``customer_ids``), on SQLite and
PostgreSQL alike. Semantics, chosen so both databases agree:

* Comparisons are typed by the JSON type of the stored value: a number compares
  with numbers, a string with strings (byte order, case-sensitive), a boolean with
  ``is_true``/``is_false``. Datetimes are stored as fixed-width UTC text, so they
  compare as text. A filter value is first coerced to the attribute's recorded
  type (``"31"`` for a number attribute means 31).
* A missing or null value matches no positive operator. ``ne``, ``not_in`` and
  ``not_contains`` are the exact negations of ``eq``, ``in`` and ``contains``, so
  they *include* customers without the attribute. ``not_exists`` means missing or
  null.
* Event ``count`` (and ``sum``) conditions that hold for zero, such as
  ``count eq 0``, include customers who have no events at all.
* Windows are evaluated against an explicit ``now``; calendar windows in
  ``ENGAGE_TIMEZONE``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Float,
    Select,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB

from ..channels import get_channel
from ..models import Customer, Event, Unsubscription
from ..values import format_datetime, looks_like_datetime, parse_datetime
from .schema import DURATION_VALUE, TEXT_VALUE

customers = Customer.__table__
events = Event.__table__


def _as_number(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def coerce(value: Any, recorded: str | None) -> Any:
    """Coerce a filter value to an attribute's recorded type, when it reads as one."""
    if isinstance(value, list):
        return [coerce(v, recorded) for v in value]
    if recorded == "number" and isinstance(value, str):
        number = _as_number(value)
        return number if isinstance(number, float) else value
    if recorded == "boolean" and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if (
        recorded in ("string", "datetime")
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    ):
        return str(value)
    return value


class Field:
    """A typed view of one value inside a JSON column (or of a plain column)."""

    def __init__(self, column: Any, key: str, dialect: str) -> None:
        self.column, self.key, self.dialect = column, key, dialect

    @property
    def _type(self) -> ColumnElement[Any]:
        if self.dialect == "postgresql":
            return func.jsonb_typeof(self._json)
        return func.json_type(self.column, bindparam(None, f'$."{self.key}"', type_=String))

    @property
    def _json(self) -> ColumnElement[Any]:
        return self.column.op("->", return_type=JSONB)(bindparam(None, self.key, type_=String))

    @property
    def _text(self) -> ColumnElement[Any]:
        if self.dialect == "postgresql":
            return self.column.op("->>", return_type=Text)(bindparam(None, self.key, type_=String))
        return func.json_extract(self.column, bindparam(None, f'$."{self.key}"', type_=String))

    def present(self) -> ColumnElement[bool]:
        kind = self._type
        return and_(kind.is_not(None), kind != "null")

    def is_number(self) -> ColumnElement[bool]:
        return (
            self._type == "number"
            if self.dialect == "postgresql"
            else self._type.in_(["integer", "real"])
        )

    def is_string(self) -> ColumnElement[bool]:
        return self._type == ("string" if self.dialect == "postgresql" else "text")

    def is_bool(self, value: bool) -> ColumnElement[bool]:
        if self.dialect == "postgresql":
            return and_(self._type == "boolean", self._text == ("true" if value else "false"))
        return self._type == ("true" if value else "false")

    def number(self) -> ColumnElement[Any]:
        return case((self.is_number(), cast(self._text, Float)))

    def text(self) -> ColumnElement[Any]:
        value = case((self.is_string(), self._text))
        return value.collate("C") if self.dialect == "postgresql" else value

    def holds(self, value: Any) -> ColumnElement[bool]:
        """PostgreSQL: ``column @> {key: value}`` – typed JSON equality that an index
        on the column can serve."""
        document = cast(literal(json.dumps({self.key: value}), Text), JSONB)
        return self.column.op("@>", return_type=Boolean)(document)

    def list_contains(self, value: Any) -> ColumnElement[bool]:
        if self.dialect == "postgresql":
            return and_(
                self._type == "array",
                self._json.op("@>")(cast(literal(json.dumps([value])), JSONB)),
            )
        each = func.json_each(
            self.column, bindparam(None, f'$."{self.key}"', type_=String)
        ).table_valued("value")
        return and_(
            self._type == "array", exists(select(1).select_from(each).where(each.c.value == value))
        )


class ColumnField(Field):
    """A customer column (``email``) seen through the same interface."""

    def __init__(self, column: Any, dialect: str) -> None:
        super().__init__(column, "", dialect)

    def present(self) -> ColumnElement[bool]:
        return self.column.is_not(None)

    def is_number(self) -> ColumnElement[bool]:
        return false()

    def is_string(self) -> ColumnElement[bool]:
        return self.column.is_not(None)

    def is_bool(self, value: bool) -> ColumnElement[bool]:
        return false()

    def number(self) -> ColumnElement[Any]:
        return literal(None, Float)

    def text(self) -> ColumnElement[Any]:
        return self.column.collate("C") if self.dialect == "postgresql" else self.column

    def list_contains(self, value: Any) -> ColumnElement[bool]:
        return false()


def _text_operand(text: str) -> str:
    """Text to compare with stored text: datetimes in their stored form."""
    if looks_like_datetime(text) and not text.endswith("Z"):
        return format_datetime(parse_datetime(text, "value"))
    return text


def _duration(value: Mapping[str, float] | float) -> timedelta:
    if not isinstance(value, Mapping):
        return timedelta(days=value)
    return timedelta(
        days=value.get("days", 0), hours=value.get("hours", 0), minutes=value.get("minutes", 0)
    )


def _two_valued(expr: ColumnElement[Any]) -> ColumnElement[bool]:
    return func.coalesce(expr, false(), type_=Boolean)


class Compiler:
    """Turns filter nodes into SQL conditions on ``engage_customers``.

    :param dialect: ``sqlite`` or ``postgresql``.
    :param now: the moment windows are evaluated against (aware).
    :param timezone: for calendar windows.
    :param attribute_types: recorded types, to coerce filter values.
    :param segment_filters: finds a referenced segment's filters by id or slug.
    :param customer_ids: restrict every subquery to these customers (incremental).
    :param as_of: also ignore events after ``now`` and customers created after it
        (used to rebuild history for past days).

    Every value that depends on ``now`` (window cutoffs, calendar bounds) and the
    restricted customer ids are *named* bind parameters, whose values are computed
    from ``now`` at build time and can be recomputed by :meth:`params`. A statement
    built once can so be executed again for another moment and other customers
    (incremental evaluation caches it).
    """

    def __init__(
        self,
        dialect: str,
        now: datetime,
        timezone: str = "UTC",
        attribute_types: Mapping[str, str] | None = None,
        segment_filters: Callable[[Any], dict[str, Any] | None] | None = None,
        customer_ids: Sequence[int] | None = None,
        as_of: bool = False,
    ) -> None:
        self.dialect = dialect
        self.now = now
        self.zone = ZoneInfo(timezone)
        self.attribute_types = attribute_types or {}
        self.segment_filters = segment_filters or (lambda ref: None)
        self.customer_ids = list(customer_ids) if customer_ids is not None else None
        self.as_of = as_of
        self._clock: list[tuple[str, Callable[[datetime], Any]]] = []
        self._ids = bindparam("engage_ids", value=self.customer_ids, expanding=True)

    def params(self, now: datetime, customer_ids: Sequence[int] | None = None) -> dict[str, Any]:
        """Parameter values to run a built statement as of ``now`` (for other customers)."""
        values = {name: compute(now) for name, compute in self._clock}
        if customer_ids is not None:
            values["engage_ids"] = list(customer_ids)
        return values

    def _at(self, compute: Callable[[datetime], Any], type_: Any = None) -> Any:
        """A named parameter whose value is ``compute(now)``."""
        name = f"engage_t{len(self._clock)}"
        self._clock.append((name, compute))
        return bindparam(name, value=compute(self.now), type_=type_ or events.c.occurred_at.type)

    # -- entry points ------------------------------------------------------------------
    def condition(self, node: Mapping[str, Any]) -> ColumnElement[bool]:
        """The SQL condition for a (validated) filter node."""
        if "all" in node:
            parts = [self.condition(child) for child in node["all"]]
            return and_(true(), *parts) if parts else true()
        if "any" in node:
            parts = [self.condition(child) for child in node["any"]]
            return or_(false(), *parts) if parts else false()
        if "not" in node:
            return not_(self.condition(node["not"]))
        if "attribute" in node:
            return self.attribute(node)
        if "event" in node:
            return self.event(node)
        if "segment" in node:
            return self.segment(node)
        if "channel" in node:
            return self.channel(node)
        raise ValueError(f"not a filter node: {node!r}")

    def query(self, node: Mapping[str, Any]) -> Select[Any]:
        """``SELECT id FROM engage_customers WHERE <filter>`` (restricted if asked)."""
        return select(customers.c.id).where(*self.scope(), self.condition(node))

    def scope(self) -> list[ColumnElement[bool]]:
        """Conditions every evaluated customer must meet: not deleted by the host
        (``on_delete="keep"``), and the restriction and as-of moment if any."""
        conditions: list[ColumnElement[bool]] = [customers.c.deleted_at.is_(None)]
        if self.customer_ids is not None:
            conditions.append(customers.c.id.in_(self._ids))
        if self.as_of:
            conditions.append(customers.c.created_at <= self._at(lambda now: now))
        return conditions

    # -- attributes and properties ---------------------------------------------------
    def attribute(self, node: Mapping[str, Any]) -> ColumnElement[bool]:
        name = node["attribute"]
        if name == "email":
            field: Field = ColumnField(customers.c.email, self.dialect)
            recorded: str | None = "string"
        else:
            field = Field(customers.c.attributes, name, self.dialect)
            recorded = self.attribute_types.get(name)
        value = node.get("value")
        if node["op"] not in TEXT_VALUE | DURATION_VALUE:  # text and durations: as given
            value = coerce(value, recorded)
        return self.compare(field, node["op"], value)

    def compare(self, field: Field, op: str, value: Any) -> ColumnElement[bool]:
        """A two-valued comparison of a typed field with a filter value."""
        negated = {"ne": "eq", "not_in": "in", "not_contains": "contains", "not_exists": "exists"}
        if op in negated:
            return not_(self.compare(field, negated[op], value))
        if op == "exists":
            return field.present()
        if op in ("is_true", "is_false"):
            return _two_valued(field.is_bool(op == "is_true"))
        if op == "eq":
            if self.dialect == "postgresql" and type(field) is Field:
                return field.holds(_text_operand(value) if isinstance(value, str) else value)
            if isinstance(value, bool):
                return _two_valued(field.is_bool(value))
            return self._ordered(field, "eq", value)
        if op in ("gt", "gte", "lt", "lte"):
            return self._ordered(field, op, value)
        if op == "between":
            low, high = value
            return and_(self._ordered(field, "gte", low), self._ordered(field, "lte", high))
        if op == "in":
            return or_(false(), *(self.compare(field, "eq", item) for item in value))
        if op == "contains":
            text = field.text()
            substring = (func.strpos if self.dialect == "postgresql" else func.instr)(
                text, value
            ) > 0
            return or_(_two_valued(substring), _two_valued(field.list_contains(value)))
        if op in ("starts_with", "ends_with"):
            text = field.text()
            size = len(value)
            start = 1 if op == "starts_with" else func.length(text) - size + 1
            part = func.substr(text, start, size)
            return _two_valued(and_(func.length(text) >= size, part == value))
        if op in DURATION_VALUE:
            span = _duration(value)
            cutoff = self._at(lambda now: format_datetime(now - span), String)
            text = field.text()
            if op == "within_last":
                upper = self._at(format_datetime, String)
                return _two_valued(and_(text >= cutoff, text <= upper))
            return _two_valued(text < cutoff)
        raise ValueError(f"unknown operator {op!r}")

    def _ordered(self, field: Field, op: str, value: Any) -> ColumnElement[bool]:
        if isinstance(value, int | float) and not isinstance(value, bool):
            subject = field.number()
            operand: Any = literal(float(value), Float)
        else:
            subject = field.text()
            operand = literal(_text_operand(str(value)), String)
        comparisons = {
            "eq": subject == operand,
            "gt": subject > operand,
            "gte": subject >= operand,
            "lt": subject < operand,
            "lte": subject <= operand,
        }
        return _two_valued(comparisons[op])

    # -- events ------------------------------------------------------------------------
    def window(self, window: Mapping[str, Any]) -> list[ColumnElement[bool]]:
        at = events.c.occurred_at
        ((kind, value),) = window.items()
        if kind == "last_days":
            return [at >= self._at(lambda now: now - timedelta(days=value))]
        if kind == "last_hours":
            return [at >= self._at(lambda now: now - timedelta(hours=value))]
        if kind == "older_than_days":
            return [at < self._at(lambda now: now - timedelta(days=value))]
        if kind == "since":
            return [at >= parse_datetime(value, "window.since")]
        if kind == "until":
            return [at < parse_datetime(value, "window.until")]
        if kind == "between":
            start, end = (parse_datetime(v, "window.between") for v in value)
            return [at >= start, at < end]
        zone = self.zone
        return [
            at >= self._at(lambda now: calendar_bounds(value, now, zone)[0]),
            at < self._at(lambda now: calendar_bounds(value, now, zone)[1]),
        ]

    def event(self, node: Mapping[str, Any]) -> ColumnElement[bool]:
        conditions = [events.c.name == node["event"]]
        if self.customer_ids is not None:
            conditions.append(events.c.customer_id.in_(self._ids))
        if self.as_of:
            conditions.append(events.c.occurred_at <= self._at(lambda now: now))
        if node.get("window"):
            conditions.extend(self.window(node["window"]))
        for prop in node.get("where", []):
            field = Field(events.c.properties, prop["property"], self.dialect)
            conditions.append(self.compare(field, prop["op"], prop.get("value")))

        measure = next((m for m in ("sum", "avg", "min", "max") if m in node), "count")
        spec = node.get(measure, {"op": "gte", "value": 1})
        if measure == "count":
            aggregate: ColumnElement[Any] = func.count()
        else:
            number = Field(events.c.properties, spec["property"], self.dialect).number()
            aggregate = getattr(func, measure)(number)
            if measure == "sum":
                aggregate = func.coalesce(aggregate, 0.0)
        predicate = _numeric(aggregate, spec["op"], spec["value"])
        grouped = select(events.c.customer_id).where(*conditions)
        at_least_once = _holds(1, spec["op"], spec["value"]) and not _holds(
            0, spec["op"], spec["value"]
        )
        if measure == "count" and spec["op"] in ("gte", "gt") and at_least_once:
            # "at least once": no grouping needed.
            return customers.c.id.in_(grouped)
        if measure in ("count", "sum") and _holds(0, spec["op"], spec["value"]):
            # Holds for customers with no events: exclude those whose total fails.
            failing = grouped.group_by(events.c.customer_id).having(not_(predicate)).subquery()
            return not_(
                exists(
                    select(1).select_from(failing).where(failing.c.customer_id == customers.c.id)
                )
            )
        return customers.c.id.in_(
            grouped.group_by(events.c.customer_id).having(_two_valued(predicate))
        )

    # -- segments and channels -----------------------------------------------------
    def segment(self, node: Mapping[str, Any]) -> ColumnElement[bool]:
        filters = self.segment_filters(node["segment"])
        if filters is None:
            inside: ColumnElement[bool] = false()
        else:
            inside = self.condition(filters)
        return not_(inside) if node.get("op", "in") == "not_in" else inside

    def channel(self, node: Mapping[str, Any]) -> ColumnElement[bool]:
        channel = node["channel"]
        opted_out = exists(
            select(1).where(
                Unsubscription.customer_id == customers.c.id, Unsubscription.channel == channel
            )
        )
        if node.get("op", "subscribed") == "unsubscribed":
            return opted_out
        return and_(get_channel(channel).reachable(), not_(opted_out))


def _numeric(expr: ColumnElement[Any], op: str, value: Any) -> ColumnElement[bool]:
    if op == "between":
        return and_(expr >= value[0], expr <= value[1])
    return {
        "eq": expr == value,
        "ne": expr != value,
        "gt": expr > value,
        "gte": expr >= value,
        "lt": expr < value,
        "lte": expr <= value,
    }[op]


def _holds(amount: float, op: str, value: Any) -> bool:
    """Whether ``amount op value`` is true in Python (to spot zero-matching filters)."""
    if op == "between":
        return value[0] <= amount <= value[1]
    return {
        "eq": amount == value,
        "ne": amount != value,
        "gt": amount > value,
        "gte": amount >= value,
        "lt": amount < value,
        "lte": amount <= value,
    }[op]


def calendar_bounds(name: str, now: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """Start (inclusive) and end (exclusive) of a calendar window, as aware datetimes."""
    local = now.astimezone(zone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)

    def at(day: datetime) -> datetime:
        return datetime(day.year, day.month, day.day, tzinfo=zone)

    if name == "today":
        return at(midnight), at(midnight + timedelta(days=1))
    if name == "this_week":
        start = midnight - timedelta(days=midnight.weekday())
        return at(start), at(start + timedelta(days=7))
    first = midnight.replace(day=1)
    next_month = (first + timedelta(days=32)).replace(day=1)
    if name == "this_month":
        return at(first), at(next_month)
    if name == "last_month":
        previous = (first - timedelta(days=1)).replace(day=1)
        return at(previous), at(first)
    raise ValueError(f"unknown calendar window {name!r}")
