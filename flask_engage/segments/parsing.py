"""The state of one filter parse: paths in errors, the node budget and the bounds.

Every node kind reads its JSON through a :class:`Parser`, so a bad value anywhere is
an :class:`~flask_engage.errors.InvalidFilter` whose message starts with its path
(``filters.all[2].op: unknown operator 'equals'``).

Two parses share the same shape rules: *checking* a filter a user saves (with
:class:`Bounds`: what the databases can evaluate) and *reading* a stored one to
compile it (``bounds=None``: it was checked when it was saved, and a later, tighter
bound must not break a segment that works).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import DEFAULTS
from ..errors import InvalidFilter, ValidationError
from ..values import (
    MAX_DAYS,
    MAX_STRING_LENGTH,
    check_name,
    check_number,
    format_datetime,
    looks_like_datetime,
    parse_datetime,
)

#: Deepest nesting of ``all``/``any``/``not``.
MAX_DEPTH = 20
#: Most nodes in one filter besides one full list: a filter may hold
#: ``MAX_NODES + max_list_values`` nodes, each value of an ``in``/``not_in`` list
#: counting as one (so 499 conditions with 1,000 values each are refused).
MAX_NODES = 1000

#: Finds what a condition refers to by id or slug (None when there is none).
Lookup = Callable[[int | str], Any]
#: The ``segment`` lookup: ``(id, slug, stored filters)`` or None.
SegmentLookup = Callable[[int | str], "tuple[int, str, dict[str, Any]] | None"]


@dataclass(frozen=True)
class Bounds:
    """Save-time limits (``docs/filters.md``, "Bounds")."""

    #: ``ENGAGE_MAX_LIST_VALUES``.
    max_list_values: int = DEFAULTS["ENGAGE_MAX_LIST_VALUES"]
    max_depth: int = MAX_DEPTH

    @property
    def max_nodes(self) -> int:
        """The node budget: :data:`MAX_NODES` plus one full list."""
        return MAX_NODES + self.max_list_values


class Parser:
    """Reads one filter: resolves references, counts nodes, applies bounds.

    :param lookups: per node kind that refers to something stored (``"segment"``),
        how to find it by id or slug. A kind without one keeps references as given
        (checking a filter with no database at hand, reading a stored one).
    :param self_slug: the slug of the segment being saved, to refuse cycles through it.
    :param bounds: save-time limits; None when reading a stored filter to compile it.
    :param chain: slugs of the segments whose filters are being walked (cycles).
    """

    def __init__(
        self,
        lookups: Mapping[str, Lookup] | None = None,
        self_slug: str | None = None,
        bounds: Bounds | None = None,
        chain: tuple[str, ...] = (),
    ) -> None:
        self.lookups = dict(lookups or {})
        self.self_slug = self_slug
        self.bounds = bounds
        self.chain = chain
        self.nodes = 0

    def fail(self, path: str, message: str) -> InvalidFilter:
        """The error for a bad value at ``path`` (raise it)."""
        return InvalidFilter(f"{path}: {message}", field=path)

    def enter(self, path: str, depth: int, size: int = 1) -> None:
        """Count ``size`` nodes at ``path`` (nested ``depth`` deep) against the budget."""
        self.nodes += size
        if self.bounds is None:
            return
        if self.nodes > self.bounds.max_nodes:
            raise self.fail(path, f"filter has more than {self.bounds.max_nodes} nodes")
        if depth > self.bounds.max_depth:
            raise self.fail(path, f"filter is nested deeper than {self.bounds.max_depth} levels")

    def only(self, node: Mapping[str, Any], path: str, allowed: set[str]) -> None:
        """Refuse fields of ``node`` outside ``allowed``."""
        extra = sorted(set(node) - allowed)
        if extra:
            raise self.fail(f"{path}.{extra[0]}", "unknown field")

    def obj(self, value: Any, path: str) -> Mapping[str, Any]:
        """``value`` if it is a JSON object."""
        if not isinstance(value, dict):
            raise self.fail(path, f"expected an object, got {type(value).__name__}")
        return value

    def choice(self, value: Any, path: str, choices: tuple[str, ...], what: str = "") -> str:
        """One of ``choices``; ``what`` prefixes the message (``unknown operator 'x'; ``)."""
        if not isinstance(value, str) or value not in choices:
            raise self.fail(path, f"{what}expected one of {', '.join(choices)}")
        return value

    def name(self, value: Any, path: str) -> str:
        """An attribute, property or event name."""
        try:
            return check_name(value, path)
        except ValidationError as exc:
            raise InvalidFilter(str(exc), field=path) from None

    def number(self, value: Any, path: str, minimum: float | None = None) -> int | float:
        """A finite number (at least ``minimum``); within signed 64 bits when bounded."""
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise self.fail(path, "expected a number")
        if minimum is not None and value < minimum:
            raise self.fail(path, f"expected a number >= {minimum:g}")
        try:
            if self.bounds is None:
                return check_number(value, path, minimum=float("-inf"), maximum=float("inf"))
            return check_number(value, path)
        except ValidationError as exc:
            raise InvalidFilter(str(exc), field=path) from None

    def days(self, value: Any, path: str, per_day: float = 1) -> int | float:
        """A span of ``value`` units (``per_day`` of them in a day): >= 0, at most
        100 years when bounded."""
        amount = self.number(value, path, minimum=0)
        if self.bounds is not None and amount > MAX_DAYS * per_day:
            limit = int(MAX_DAYS * per_day)
            raise self.fail(path, f"{amount!r} is longer than 100 years (at most {limit})")
        return amount

    def values(self, value: Any, path: str, op: str) -> list[Any]:
        """A non-empty list of scalars, each counted as a node."""
        if not isinstance(value, list) or not value:
            raise self.fail(path, f"operator {op!r} needs a non-empty list")
        if self.bounds is not None and len(value) > self.bounds.max_list_values:
            raise self.fail(
                path,
                f"list has {len(value)} values; at most {self.bounds.max_list_values} "
                "(ENGAGE_MAX_LIST_VALUES)",
            )
        self.enter(path, 0, len(value))
        return [self.scalar(v, f"{path}[{i}]") for i, v in enumerate(value)]

    def scalar(self, value: Any, path: str) -> Any:
        """A string, number or boolean; datetimes in their stored form."""
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            return self.number(value, path)
        if isinstance(value, str):
            return self.text(value, path)
        raise self.fail(path, f"expected a string, number or boolean, got {type(value).__name__}")

    def text(self, value: str, path: str) -> str:
        """A string (datetimes in their stored form), at most as long as a stored one."""
        if self.bounds is not None and len(value) > MAX_STRING_LENGTH:
            raise self.fail(path, f"text is longer than {MAX_STRING_LENGTH} characters")
        if looks_like_datetime(value):
            try:
                return format_datetime(parse_datetime(value, path))
            except ValidationError:
                return value
        return value

    def instant(self, value: Any, path: str) -> str:
        """An ISO 8601 datetime, as aware UTC ISO text."""
        try:
            return parse_datetime(value, path).isoformat()
        except ValidationError:
            raise self.fail(path, f"expected an ISO 8601 datetime, got {value!r}") from None
