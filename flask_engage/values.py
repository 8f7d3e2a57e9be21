"""Typed values: how attributes and properties are validated, typed and stored.

Values are kept in JSON. Strings, numbers, booleans and lists of them are stored
as they are; datetimes (Python ``datetime``/``date`` or ISO 8601 strings) are
stored as fixed-width UTC strings (``2026-01-31T09:30:00.000000Z``) so that they
compare correctly as text on every database.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from .errors import ValidationError

MAX_NAME_LENGTH = 128
MAX_STRING_LENGTH = 10_000
MAX_LIST_LENGTH = 1_000
_NAME = re.compile(r"^[^\x00-\x1f\x7f\"\\]+$")
_ISO_DATETIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?)?$"
)

TYPES = ("string", "number", "boolean", "datetime", "list")

#: Numbers in filters stay within what both databases evaluate: signed 64-bit.
MIN_INT64, MAX_INT64 = -(2**63), 2**63 - 1
#: The longest window, duration or wait: 100 years, in days.
MAX_DAYS = 36_525
#: Largest id Engage looks a segment or list up by (their id columns are 32-bit).
MAX_ROW_ID = 2**31 - 1
#: What a slug looks like: anything else names no segment or list and is not looked up.
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
#: The earliest and latest instants Engage computes with (aware, UTC).
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


def check_name(name: Any, field: str) -> str:
    """Return ``name`` if it is a usable attribute, property or event name."""
    if not isinstance(name, str):
        raise ValidationError(f"{field}: name must be a string", field=field)
    if not name.strip():
        raise ValidationError(f"{field}: name must not be empty", field=field)
    if len(name) > MAX_NAME_LENGTH:
        raise ValidationError(
            f"{field}: name is longer than {MAX_NAME_LENGTH} characters", field=field
        )
    if not _NAME.match(name):
        raise ValidationError(
            f"{field}: name must not contain quotes, backslashes or control characters",
            field=field,
        )
    return name


def row_id(ref: Any) -> int | None:
    """The id an int or an all-ASCII-digit text names, when it can be one (1 to
    :data:`MAX_ROW_ID`); None otherwise, so a lookup never sends the database a
    number it cannot hold."""
    if isinstance(ref, str):
        if not (ref.isascii() and ref.isdigit()) or len(ref) > 10:
            return None
        ref = int(ref)
    if isinstance(ref, bool) or not isinstance(ref, int):
        return None
    return ref if 0 < ref <= MAX_ROW_ID else None


def as_aware(value: Any, field: str) -> datetime:
    """A datetime made timezone-aware: a naive one is taken as UTC."""
    if not isinstance(value, datetime):
        raise ValidationError(f"{field}: expected a datetime, got {value!r}", field=field)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def format_datetime(value: datetime) -> str:
    """The stored form of a datetime: fixed-width UTC text (years before 1000 padded)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def shift(moment: datetime, days: float) -> datetime:
    """``moment + days``, held at the first or last representable instant instead of
    overflowing (a window of 100 years before year 50 starts at year 1)."""
    try:
        return moment + timedelta(days=days)
    except OverflowError:
        return EARLIEST if days < 0 else LATEST


def check_number(
    value: Any, field: str, *, minimum: float = MIN_INT64, maximum: float = MAX_INT64
) -> int | float:
    """A finite number (not a boolean) within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{field}: expected a number", field=field)
    if not math.isfinite(value):
        raise ValidationError(f"{field}: number must be finite", field=field)
    if not minimum <= value <= maximum:
        low, high = (int(b) if float(b).is_integer() else b for b in (minimum, maximum))
        raise ValidationError(
            f"{field}: {value!r} is out of range (expected {low} to {high})", field=field
        )
    return value


def parse_datetime(value: Any, field: str) -> datetime:
    """Parse an ISO 8601 string (or accept a datetime) into an aware UTC datetime.

    A value without a timezone is taken as UTC.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and _ISO_DATETIME.match(value.strip()):
        text = value.strip().replace("Z", "+00:00")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValidationError(
                f"{field}: {value!r} is not a valid ISO 8601 datetime", field=field
            ) from None
    else:
        raise ValidationError(f"{field}: expected an ISO 8601 datetime, got {value!r}", field=field)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValidationError(f"{field}: {value!r} is out of range", field=field) from None


def looks_like_datetime(value: str) -> bool:
    """True for strings that are ISO 8601 dates or datetimes."""
    return bool(_ISO_DATETIME.match(value))


def normalize_value(value: Any, field: str) -> Any:
    """Validate one attribute/property value and return its stored JSON form."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > 2**53:
            raise ValidationError(f"{field}: integer {value} is too large", field=field)
        return value
    if isinstance(value, float | Decimal):
        number = float(value)
        if not math.isfinite(number):
            raise ValidationError(f"{field}: number must be finite", field=field)
        return int(number) if isinstance(value, Decimal) and number.is_integer() else number
    if isinstance(value, datetime | date):
        return format_datetime(parse_datetime(value, field))
    if isinstance(value, str):
        if len(value) > MAX_STRING_LENGTH:
            raise ValidationError(
                f"{field}: text is longer than {MAX_STRING_LENGTH} characters", field=field
            )
        if looks_like_datetime(value):
            try:
                return format_datetime(parse_datetime(value, field))
            except ValidationError:
                return value
        return value
    if isinstance(value, list | tuple):
        if len(value) > MAX_LIST_LENGTH:
            raise ValidationError(
                f"{field}: list has more than {MAX_LIST_LENGTH} items", field=field
            )
        items = [normalize_value(item, f"{field}[{i}]") for i, item in enumerate(value)]
        if any(isinstance(item, list | dict) for item in items):
            raise ValidationError(f"{field}: lists may hold only plain values", field=field)
        return items
    raise ValidationError(f"{field}: unsupported value of type {type(value).__name__}", field=field)


def normalize_mapping(values: Any, field: str) -> dict[str, Any]:
    """Validate a mapping of names to values (attributes or properties)."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValidationError(f"{field}: expected an object", field=field)
    return {
        check_name(name, f"{field}.{name}"): normalize_value(value, f"{field}.{name}")
        for name, value in values.items()
    }


def value_type(value: Any) -> str | None:
    """The recorded type of a stored value; None for null."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "list"
    if isinstance(value, str) and looks_like_datetime(value):
        return "datetime"
    return "string"
