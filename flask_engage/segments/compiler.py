"""Compile a filter into one SQL condition on the customers table.

The same compiler answers ``count`` (the builder's preview), full recomputes and
incremental evaluation of a few customers (``customer_ids``), on SQLite and
PostgreSQL alike. Each node kind compiles itself (:mod:`.nodes`); this module
holds what they share: the clock, the restriction to some customers, references
to other segments. Semantics, chosen so both databases agree:

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
  ``count eq 0``, include customers who have no events at all. A ``sum`` or
  ``avg`` that overflows a double matches no threshold.
* Windows are evaluated against an explicit ``now``; calendar windows in
  ``ENGAGE_TIMEZONE``.

The compiler reads one form: the checked :class:`~.nodes.Node` tree. A stored
filter (a mapping, as the user gave it) is read into that tree first, with the
shape rules of validation but without its save-time bounds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import BindParameter, ColumnElement, Select, bindparam, select

from ..models import Customer, Event
from .nodes import Node, parse_node
from .parsing import Parser
from .windows import calendar_bounds

customers = Customer.__table__
events = Event.__table__

__all__ = ["Compiler", "calendar_bounds", "customers", "events", "read_filter"]


def read_filter(filters: Mapping[str, Any] | Node) -> Node:
    """The node tree of a stored (already checked) filter."""
    return filters if isinstance(filters, Node) else parse_node(Parser(), filters, "filters")


class Compiler:
    """Turns filters into SQL conditions on ``engage_customers``.

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
        self.attribute_types = attribute_types if attribute_types is not None else {}
        self.segment_filters = segment_filters or (lambda ref: None)
        self.customer_ids = list(customer_ids) if customer_ids is not None else None
        self.as_of = as_of
        self._clock: list[tuple[str, Callable[[datetime], Any]]] = []
        self._ids: BindParameter[Any] = bindparam(
            "engage_ids", value=self.customer_ids, expanding=True
        )

    def params(self, now: datetime, customer_ids: Sequence[int] | None = None) -> dict[str, Any]:
        """Parameter values to run a built statement as of ``now`` (for other customers)."""
        values = {name: compute(now) for name, compute in self._clock}
        if customer_ids is not None:
            values["engage_ids"] = list(customer_ids)
        return values

    def at(self, compute: Callable[[datetime], Any], type_: Any = None) -> BindParameter[Any]:
        """A named parameter whose value is ``compute(now)`` (a timestamp by default)."""
        name = f"engage_t{len(self._clock)}"
        self._clock.append((name, compute))
        return bindparam(name, value=compute(self.now), type_=type_ or events.c.occurred_at.type)

    # -- entry points ------------------------------------------------------------------
    def condition(self, filters: Mapping[str, Any] | Node) -> ColumnElement[bool]:
        """The SQL condition for a filter: a checked node, or a stored filter."""
        return read_filter(filters).compile(self)

    def query(self, filters: Mapping[str, Any] | Node) -> Select[Any]:
        """``SELECT id FROM engage_customers WHERE <filter>`` (restricted if asked)."""
        return select(customers.c.id).where(*self.scope(), self.condition(filters))

    def scope(self) -> list[ColumnElement[bool]]:
        """Conditions every evaluated customer must meet: not deleted by the host
        (``on_delete="keep"``), and the restriction and as-of moment if any."""
        conditions: list[ColumnElement[bool]] = [customers.c.deleted_at.is_(None)]
        if self.customer_ids is not None:
            conditions.append(customers.c.id.in_(self._ids))
        if self.as_of:
            conditions.append(customers.c.created_at <= self.at(lambda now: now))
        return conditions

    def event_scope(self) -> list[ColumnElement[bool]]:
        """Conditions every counted event must meet (restriction, as-of)."""
        conditions: list[ColumnElement[bool]] = []
        if self.customer_ids is not None:
            conditions.append(events.c.customer_id.in_(self._ids))
        if self.as_of:
            conditions.append(events.c.occurred_at <= self.at(lambda now: now))
        return conditions
