"""Typed views of stored values in SQL, the same on SQLite and PostgreSQL.

A :class:`Field` is one value inside a JSON column (a customer attribute, an event
property) or a plain column (:class:`ColumnField`, the customer's email). Its
methods answer typed questions – is it a number? its number, its text – so that
a comparison never reads a string as a number or the other way round (see
``PITFALLS.md``: each database casts JSON differently).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Float,
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
    select,
)
from sqlalchemy.dialects.postgresql import JSONB

from ..values import format_datetime, looks_like_datetime, parse_datetime


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


def text_operand(text: str) -> str:
    """Text to compare with stored text: datetimes in their stored form."""
    if looks_like_datetime(text) and not text.endswith("Z"):
        return format_datetime(parse_datetime(text, "value"))
    return text


def two_valued(expr: ColumnElement[Any]) -> ColumnElement[bool]:
    """``expr`` with NULL read as false, so that ``NOT`` of it is the exact negation."""
    return func.coalesce(expr, false(), type_=Boolean)


class Field:
    """A typed view of one value inside a JSON column."""

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
        """The value as a double; NULL unless it is a JSON number."""
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
