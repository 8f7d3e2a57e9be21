"""Comparison operators of attribute conditions and event ``where`` rows.

One :class:`Operator` per name: what its operand is (checked by :func:`check_operand`),
how it compiles (:func:`compare`, on a typed :class:`~.fields.Field`), its label and
the value types the builder offers it for. :class:`Comparison` is the
``{SUBJECT: NAME, "op": OP, "value": V}`` shape both node kinds share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Float, String, and_, false, func, literal, not_, or_

from ..values import MAX_DAYS, MAX_STRING_LENGTH, format_datetime, looks_like_datetime, shift
from .fields import Field, coerce, text_operand, two_valued
from .parsing import Parser

if TYPE_CHECKING:
    from .compiler import Compiler


@dataclass(frozen=True)
class Operator:
    """One comparison operator."""

    name: str
    #: What the builder shows.
    label: str
    #: Its operand: ``none``, ``scalar``, ``ordered`` (no boolean), ``pair``
    #: ([low, high]), ``list``, ``text`` (a non-empty string, as given) or
    #: ``duration`` (days, or ``{"days"|"hours"|"minutes": N}``).
    operand: str
    #: The operator it is the exact negation of (``ne`` of ``eq``).
    negates: str | None = None


_OPERATORS = (
    Operator("eq", "is", "scalar"),
    Operator("ne", "is not", "scalar", negates="eq"),
    Operator("gt", ">", "ordered"),
    Operator("gte", ">=", "ordered"),
    Operator("lt", "<", "ordered"),
    Operator("lte", "<=", "ordered"),
    Operator("between", "between", "pair"),
    Operator("in", "is one of", "list"),
    Operator("not_in", "is none of", "list", negates="in"),
    Operator("contains", "contains", "text"),
    Operator("not_contains", "does not contain", "text", negates="contains"),
    Operator("starts_with", "starts with", "text"),
    Operator("ends_with", "ends with", "text"),
    Operator("exists", "is set", "none"),
    Operator("not_exists", "is not set", "none", negates="exists"),
    Operator("is_true", "is true", "none"),
    Operator("is_false", "is false", "none"),
    Operator("within_last", "within the last", "duration"),
    Operator("more_than_ago", "more than ... ago", "duration"),
)
BY_NAME = {op.name: op for op in _OPERATORS}
OPERATORS = tuple(BY_NAME)
#: Operators the builder offers for each recorded type, most useful first.
BY_TYPE = {
    "string": (
        "eq", "ne", "in", "not_in", "contains", "not_contains", "starts_with", "ends_with",
        "gt", "gte", "lt", "lte", "exists", "not_exists",
    ),
    "number": ("eq", "ne", "gt", "gte", "lt", "lte", "between", "in", "not_in", "exists",
               "not_exists"),
    "boolean": ("is_true", "is_false", "eq", "ne", "exists", "not_exists"),
    "datetime": ("within_last", "more_than_ago", "gt", "gte", "lt", "lte", "between", "eq", "ne",
                 "exists", "not_exists"),
    "list": ("contains", "not_contains", "exists", "not_exists"),
}  # fmt: skip
DURATION_UNITS = {"days": 1, "hours": 24, "minutes": 24 * 60}


# -- operands --------------------------------------------------------------------------
def check_operand(parser: Parser, op: str, value: Any, path: str) -> Any:
    """The normalized operand of ``op`` (``value`` is present unless ``op`` takes none)."""
    operand = BY_NAME[op].operand
    if operand == "list":
        return parser.values(value, path, op)
    if operand == "pair":
        return _pair(parser, value, path)
    if operand == "text":
        if not isinstance(value, str) or value == "":
            raise parser.fail(path, f"operator {op!r} needs a non-empty string")
        if parser.bounds is not None and len(value) > MAX_STRING_LENGTH:
            raise parser.fail(path, f"text is longer than {MAX_STRING_LENGTH} characters")
        return value
    if operand == "duration":
        return _duration(parser, value, path)
    scalar = parser.scalar(value, path)
    if operand == "ordered" and isinstance(scalar, bool):
        raise parser.fail(path, f"operator {op!r} needs a number, a string or a datetime")
    return scalar


def _pair(parser: Parser, value: Any, path: str) -> list[Any]:
    if not isinstance(value, list) or len(value) != 2:
        raise parser.fail(path, "operator 'between' needs a list of two values [low, high]")
    low, high = (parser.scalar(v, f"{path}[{i}]") for i, v in enumerate(value))
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high))
    datetimes = all(isinstance(v, str) and looks_like_datetime(v) for v in (low, high))
    if not (numbers or datetimes):
        raise parser.fail(path, "'between' needs two numbers or two datetimes")
    return [low, high]


def _duration(parser: Parser, value: Any, path: str) -> dict[str, float]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = {"days": value}
    if not isinstance(value, dict) or not value or set(value) - set(DURATION_UNITS):
        raise parser.fail(path, "expected a number of days or {'days'|'hours'|'minutes': N}")
    span = {
        unit: parser.days(n, f"{path}.{unit}", DURATION_UNITS[unit]) for unit, n in value.items()
    }
    if parser.bounds is not None and duration_days(span) > MAX_DAYS:
        raise parser.fail(path, "duration is longer than 100 years")
    return span


def duration_days(span: Mapping[str, float]) -> float:
    """A duration's length in days."""
    return sum(amount / DURATION_UNITS[unit] for unit, amount in span.items())


# -- SQL -------------------------------------------------------------------------------
def compare(compiler: Compiler, field: Field, op: str, value: Any) -> ColumnElement[bool]:
    """A two-valued comparison of a typed field with a (normalized) operand."""
    negates = BY_NAME[op].negates
    if negates is not None:
        return not_(compare(compiler, field, negates, value))
    if op == "exists":
        return field.present()
    if op in ("is_true", "is_false"):
        return two_valued(field.is_bool(op == "is_true"))
    if op == "eq":
        if compiler.dialect == "postgresql" and type(field) is Field:
            return field.holds(text_operand(value) if isinstance(value, str) else value)
        if isinstance(value, bool):
            return two_valued(field.is_bool(value))
        return _ordered(field, "eq", value)
    if op in ("gt", "gte", "lt", "lte"):
        return _ordered(field, op, value)
    if op == "between":
        low, high = value
        return and_(_ordered(field, "gte", low), _ordered(field, "lte", high))
    if op == "in":
        return _one_of(field, value)
    if op == "contains":
        text = field.text()
        found = (func.strpos if compiler.dialect == "postgresql" else func.instr)(text, value)
        return or_(two_valued(found > 0), two_valued(field.list_contains(value)))
    if op in ("starts_with", "ends_with"):
        text = field.text()
        size = len(value)
        start = 1 if op == "starts_with" else func.length(text) - size + 1
        part = func.substr(text, start, size)
        return two_valued(and_(func.length(text) >= size, part == value))
    days = duration_days(value)
    cutoff = compiler.at(lambda now: format_datetime(shift(now, -days)), String)
    text = field.text()
    if op == "within_last":
        upper = compiler.at(_stored_now, String)
        return two_valued(and_(text >= cutoff, text <= upper))
    return two_valued(text < cutoff)


def _stored_now(now: datetime) -> str:
    return format_datetime(now)


def _ordered(field: Field, op: str, value: Any) -> ColumnElement[bool]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        subject = field.number()
        operand: Any = literal(float(value), Float)
    else:
        subject = field.text()
        operand = literal(text_operand(str(value)), String)
    comparisons = {
        "eq": subject == operand,
        "gt": subject > operand,
        "gte": subject >= operand,
        "lt": subject < operand,
        "lte": subject <= operand,
    }
    return two_valued(comparisons[op])


def _one_of(field: Field, values: list[Any]) -> ColumnElement[bool]:
    """``eq`` any of ``values``, as one bound ``IN`` per type (a long list of ORs is too
    deep for SQLite: "Expression tree is too large")."""
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    texts = [text_operand(str(v)) for v in values if isinstance(v, str)]
    flags = {v for v in values if isinstance(v, bool)}
    parts = [two_valued(field.is_bool(flag)) for flag in sorted(flags)]
    if numbers:
        parts.append(two_valued(field.number().in_(numbers)))
    if texts:
        parts.append(two_valued(field.text().in_(texts)))
    return or_(false(), *parts)


@dataclass(frozen=True)
class Comparison:
    """``{SUBJECT: NAME, "op": OP, "value": V}``: an attribute condition or a ``where`` row."""

    subject: str
    name: str
    op: str
    value: Any = None

    @classmethod
    def parse(cls, parser: Parser, node: Mapping[str, Any], path: str, subject: str) -> Comparison:
        """Check one comparison whose name is under ``subject`` (``attribute``/``property``)."""
        parser.only(node, path, {subject, "op", "value"})
        name = parser.name(node.get(subject), f"{path}.{subject}")
        op = node.get("op")
        if op not in BY_NAME:
            raise parser.fail(
                f"{path}.op", f"unknown operator {op!r}; expected one of {', '.join(OPERATORS)}"
            )
        if BY_NAME[op].operand == "none":
            if node.get("value") is not None:
                raise parser.fail(f"{path}.value", f"operator {op!r} takes no value")
            return cls(subject, name, op)
        if "value" not in node:
            raise parser.fail(f"{path}.value", f"operator {op!r} needs a value")
        return cls(subject, name, op, check_operand(parser, op, node["value"], f"{path}.value"))

    def compile(
        self, compiler: Compiler, field: Field, recorded: str | None = None
    ) -> ColumnElement[bool]:
        """The condition on ``field``; scalars coerced to the ``recorded`` type first
        (text operands and durations are taken as given)."""
        value = self.value
        if recorded is not None and BY_NAME[self.op].operand not in ("text", "duration"):
            value = coerce(value, recorded)
        return compare(compiler, field, self.op, value)

    @property
    def uses_clock(self) -> bool:
        """``within_last``/``more_than_ago`` change with the clock alone."""
        return BY_NAME[self.op].operand == "duration"

    def to_json(self) -> dict[str, Any]:
        """The normalized JSON form."""
        node = {self.subject: self.name, "op": self.op}
        if self.value is not None:
            node["value"] = self.value
        return node


# -- JSON Schema and the builder's annotations ------------------------------------------
def comparison_schema(subject: str, max_list_values: int) -> dict[str, Any]:
    """The JSON Schema of a comparison whose name is under ``subject``."""
    return {
        "type": "object",
        "required": [subject, "op"],
        "additionalProperties": False,
        "properties": {
            subject: {"type": "string", "minLength": 1, "maxLength": 128},
            "op": {"enum": list(OPERATORS)},
            "value": {
                "anyOf": [
                    {"$ref": "#/$defs/scalar"},
                    {
                        "type": "array",
                        "items": {"$ref": "#/$defs/scalar"},
                        "minItems": 1,
                        "maxItems": max_list_values,
                    },
                    {"$ref": "#/$defs/duration"},
                ]
            },
        },
    }


def builder_hints() -> dict[str, Any]:
    """Labels, operand shapes and per-type choices for the builder (``x-engage``)."""
    return {
        "operators": {op.name: {"label": op.label, "operand": op.operand} for op in _OPERATORS},
        "operators_by_type": {kind: list(names) for kind, names in BY_TYPE.items()},
    }
