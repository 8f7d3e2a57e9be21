"""Keyset paging for every list of the admin.

A page is the rows after (or before) a position, ``size`` of them, found through
an index however deep the page: ``WHERE id > :after ORDER BY id LIMIT size + 1``.
Positions come from the query string and are checked here, so a position no
database can hold is a 400, never a database error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from flask import request
from sqlalchemy import BigInteger, ColumnElement, Select
from sqlalchemy.orm import QueryableAttribute, Session

from ..errors import ValidationError

T = TypeVar("T")

#: Rows per page.
PAGE = 50
#: The largest id of Engage's 64-bit id columns (customers, events, messages...).
MAX_ID = 2**63 - 1
#: The largest id of its 32-bit ones (segments, broadcasts, automations).
MAX_SMALL_ID = 2**31 - 1


def id_arg(name: str, maximum: int = MAX_ID) -> int | None:
    """A whole number from the query string (an id or a position); None when absent.

    Anything else, or a number above ``maximum`` (what the column holds), is a
    :class:`ValidationError` naming the parameter.
    """
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 19 or int(raw) > maximum:
        raise ValidationError(f"{name}: expected a whole number, got {raw[:40]!r}", field=name)
    return int(raw)


def largest(column: Any) -> int:
    """The largest id a column holds: 64-bit for ``BigInteger`` ids, else 32-bit."""
    return MAX_ID if isinstance(getattr(column, "type", None), BigInteger) else MAX_SMALL_ID


@dataclass
class Page(Generic[T]):
    """One page of rows and the position of the next one (None on the last page)."""

    rows: list[T]
    next: int | None
    #: True when this is the first page (no position was given).
    first: bool


def keyset(
    session: Session,
    query: Select[*tuple[Any, ...]],
    key: ColumnElement[Any] | QueryableAttribute[Any],
    *,
    cursor: str = "after",
    descending: bool = False,
    size: int = PAGE,
    scalars: bool = True,
    key_of: Callable[[Any], int] | None = None,
) -> Page[Any]:
    """The page of ``query`` ordered by ``key`` that starts after the position in the
    query-string parameter ``cursor``.

    ``descending``: newest first (positions go down). ``scalars``: rows are entities
    (else result rows); ``key_of`` reads a row's key (default: ``row.id``).
    """
    position = id_arg(cursor, largest(key))
    if position is not None:
        query = query.where(key < position if descending else key > position)
    query = query.order_by(key.desc() if descending else key).limit(size + 1)
    result = session.scalars(query) if scalars else session.execute(query)
    rows = list(result)
    more = len(rows) > size
    rows = rows[:size]
    read = key_of or (lambda row: row.id)
    return Page(rows, read(rows[-1]) if more and rows else None, position is None)
