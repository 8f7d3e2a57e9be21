"""Event windows: which of a customer's events an event condition counts.

One :class:`WindowKind` per name: how its value is checked, the bounds it puts on
``occurred_at`` (relative ones as clock parameters of the compiler), whether it
moves with the clock (which makes a segment *time-based*) and what the builder
shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement

from ..models import Event
from ..values import EARLIEST, MAX_DAYS, parse_datetime, shift
from .parsing import Parser

if TYPE_CHECKING:
    from .compiler import Compiler

events = Event.__table__

CALENDAR = {
    "today": "today",
    "this_week": "this week",
    "this_month": "this month",
    "last_month": "last month",
}


@dataclass(frozen=True)
class WindowKind:
    """One kind of window."""

    name: str
    label: str
    #: The builder's input: ``number``, ``datetime``, ``pair`` or ``choice``.
    input: str
    #: Its bounds move with the clock.
    relative: bool
    #: For a ``number`` window: how many of its units make a day, and the direction
    #: (-1: events since N units ago; +1: events before N units ago).
    per_day: float = 1
    direction: int = -1


_KINDS = (
    WindowKind("last_days", "in the last N days", "number", True),
    WindowKind("last_hours", "in the last N hours", "number", True, per_day=24),
    WindowKind("older_than_days", "more than N days ago", "number", True, direction=1),
    WindowKind("since", "since", "datetime", False),
    WindowKind("until", "until", "datetime", False),
    WindowKind("between", "between", "pair", False),
    WindowKind("calendar", "calendar", "choice", True),
)
BY_NAME = {kind.name: kind for kind in _KINDS}
WINDOW_KINDS = tuple(BY_NAME)


@dataclass(frozen=True)
class Window:
    """A checked window: its kind and normalized value."""

    kind: WindowKind
    value: Any

    @classmethod
    def parse(cls, parser: Parser, window: Any, path: str) -> Window:
        """Check ``{KIND: VALUE}``."""
        if not isinstance(window, dict) or len(window) != 1:
            raise parser.fail(path, f"expected exactly one of {', '.join(WINDOW_KINDS)}")
        ((name, value),) = window.items()
        sub = f"{path}.{name}"
        if name not in BY_NAME:
            raise parser.fail(sub, f"unknown window; expected one of {', '.join(WINDOW_KINDS)}")
        kind = BY_NAME[name]
        if kind.input == "number":
            return cls(kind, parser.days(value, sub, kind.per_day))
        if kind.input == "choice":
            return cls(kind, parser.choice(value, sub, tuple(CALENDAR)))
        if kind.input == "pair":
            if not isinstance(value, list) or len(value) != 2:
                raise parser.fail(sub, "expected [start, end] ISO datetimes")
            return cls(kind, [parser.instant(v, f"{sub}[{i}]") for i, v in enumerate(value)])
        return cls(kind, parser.instant(value, sub))

    def conditions(self, compiler: Compiler) -> list[ColumnElement[bool]]:
        """Conditions on ``engage_events.occurred_at``."""
        at = events.c.occurred_at
        kind, value = self.kind, self.value
        if kind.input == "number":
            days = value / kind.per_day
            cutoff = compiler.at(lambda now: shift(now, -days))
            return [at >= cutoff] if kind.direction < 0 else [at < cutoff]
        if kind.name == "since":
            return [at >= parse_datetime(value, "window.since")]
        if kind.name == "until":
            return [at < parse_datetime(value, "window.until")]
        if kind.name == "between":
            start, end = (parse_datetime(v, "window.between") for v in value)
            return [at >= start, at < end]
        zone = compiler.zone
        return [
            at >= compiler.at(_bound(value, zone, 0)),
            at < compiler.at(_bound(value, zone, 1)),
        ]

    def earliest(self, now: datetime) -> datetime:
        """The earliest ``occurred_at`` the window counts at ``now``; :data:`EARLIEST`
        when it has no lower bound (``older_than_days``, ``until``)."""
        kind, value = self.kind, self.value
        if kind.input == "number":
            return shift(now, -value / kind.per_day) if kind.direction < 0 else EARLIEST
        if kind.name == "since":
            return parse_datetime(value, "window.since")
        if kind.name == "between":
            return parse_datetime(value[0], "window.between")
        if kind.name == "until":
            return EARLIEST
        # a calendar window starts in the app's zone, within a day of its UTC start
        return calendar_bounds(value, now, ZoneInfo("UTC"))[0] - timedelta(days=1)

    def to_json(self) -> dict[str, Any]:
        """The normalized JSON form."""
        return {self.kind.name: self.value}


def _bound(name: str, zone: ZoneInfo, end: int) -> Callable[[datetime], datetime]:
    return lambda now: calendar_bounds(name, now, zone)[end]


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


def schema() -> dict[str, Any]:
    """The JSON Schema of a window."""
    properties: dict[str, Any] = {}
    for kind in _KINDS:
        if kind.input == "number":
            limit = MAX_DAYS * kind.per_day
            properties[kind.name] = {"type": "number", "minimum": 0, "maximum": limit}
        elif kind.input == "choice":
            properties[kind.name] = {"enum": list(CALENDAR)}
        elif kind.input == "pair":
            properties[kind.name] = {
                "type": "array",
                "items": {"type": "string", "format": "date-time"},
                "minItems": 2,
                "maxItems": 2,
            }
        else:
            properties[kind.name] = {"type": "string", "format": "date-time"}
    return {
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "properties": properties,
        "additionalProperties": False,
    }


def builder_hints() -> dict[str, Any]:
    """Labels and inputs of windows (in order: a list, as JSON objects may be re-sorted)
    and of calendar choices for the builder (``x-engage``)."""
    return {
        "windows": [
            {"name": kind.name, "label": kind.label, "input": kind.input} for kind in _KINDS
        ],
        "calendar": dict(CALENDAR),
    }
