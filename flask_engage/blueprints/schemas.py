"""Request bodies, each defined once: checked by the routes, described by ``/openapi.json``.

A :class:`Body` is an ordered set of fields (:class:`Field`). Each field carries its JSON
Schema (for the OpenAPI document) and the check that turns the raw JSON value into
the value stored (the same checks the Python API uses, so the messages match).
:meth:`Body.parse` refuses unknown fields, then missing required ones, then runs
the checks in the fields' order; every error names the field's path
(``batch[2].timestamp``) and becomes a 400 JSON answer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import current_app

from ..addresses import check_url
from ..errors import ValidationError
from ..tracking import check_customer_id, check_email, check_timestamp
from ..values import MAX_NAME_LENGTH, check_name, normalize_mapping, normalize_value

Check = Callable[[Any, str], Any]


def _as_is(value: Any, path: str) -> Any:
    return value


@dataclass(frozen=True)
class Field:
    """One member of a JSON object body."""

    #: Its JSON Schema (without ``null``: see ``nullable``).
    schema: dict[str, Any]
    #: ``check(value, path)`` returns the value to use or raises ValidationError naming ``path``.
    check: Check = _as_is
    required: bool = False
    #: ``null`` is accepted and means the same as leaving the field out.
    nullable: bool = False

    def json_schema(self) -> dict[str, Any]:
        if not self.nullable:
            return self.schema
        kind = self.schema.get("type")
        if kind is None:
            return {"anyOf": [self.schema, {"type": "null"}]}
        kinds = kind if isinstance(kind, list) else [kind]
        return {**self.schema, "type": [*kinds, "null"]}


@dataclass(frozen=True)
class Body:
    """A JSON object body: its fields (in the order they are checked) and an example."""

    fields: Mapping[str, Field]
    example: Any = None
    description: str | None = None

    def parse(self, data: Any, prefix: str = "") -> dict[str, Any]:
        """The checked values of the fields present (a ``null`` nullable field is left out).

        ``prefix`` is the path of this object inside a larger body (``batch[3].``).
        """
        where = prefix.rstrip(".") or "body"
        if not isinstance(data, dict):
            raise ValidationError(f"{where}: expected an object", field=where)
        unknown = sorted(name for name in data if name not in self.fields)
        if unknown:
            path = f"{prefix}{unknown[0]}"
            raise ValidationError(f"{path}: unknown field", field=path)
        for name, spec in self.fields.items():
            if spec.required and name not in data:
                raise ValidationError(f"{prefix}{name}: required", field=f"{prefix}{name}")
        return {
            name: spec.check(data[name], f"{prefix}{name}")
            for name, spec in self.fields.items()
            if name in data and not (spec.nullable and data[name] is None)
        }

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "object"}
        if self.description:
            schema["description"] = self.description
        required = [name for name, spec in self.fields.items() if spec.required]
        if required:
            schema["required"] = required
        schema["additionalProperties"] = False
        schema["properties"] = {name: spec.json_schema() for name, spec in self.fields.items()}
        return schema


def nested(body: Body, *, required: bool = False) -> Field:
    """A field holding an object of its own (``keys`` of a push subscription)."""
    return Field(body.json_schema(), lambda value, path: body.parse(value, f"{path}."), required)


# --- checks ----------------------------------------------------------------------------


def _browser_event(value: Any, path: str) -> str:
    """An event name, and one of ``ENGAGE_BROWSER_EVENTS`` when that is a list."""
    name = check_name(value, path)
    allowed = current_app.config["ENGAGE_BROWSER_EVENTS"]
    if allowed is not None and name not in allowed:
        raise ValidationError(
            f"{path}: {name!r} is not an event browsers may send (ENGAGE_BROWSER_EVENTS)",
            field=path,
        )
    return name


def _batch(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise ValidationError(f"{path}: expected a non-empty list of events", field=path)
    limit = current_app.config["ENGAGE_MAX_BATCH"]
    if len(value) > limit:
        raise ValidationError(f"{path}: more than {limit} events", field=path)
    return [TRACK.parse(item, f"{path}[{index}].") for index, item in enumerate(value)]


def epoch_or_iso(value: Any, path: str) -> datetime:
    """An ISO 8601 string or a number of seconds since the epoch, as aware UTC."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            if not math.isfinite(value):
                raise ValueError(value)
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise ValidationError(
                f"{path}: {value!r} is not a valid number of seconds since the epoch", field=path
            ) from None
    return check_timestamp(value, path)


def _text_attribute(value: Any, path: str) -> str | None:
    """A v1 standard field stored as text (``null`` removes it)."""
    if value is not None and not isinstance(value, str):
        raise ValidationError(f"{path}: expected a string", field=path)
    return normalize_value(value, path)


def _phone_number(value: Any, path: str) -> str | None:
    """Engage's ``number``: text, also when an SDK sends it as an integer."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return _text_attribute(value, path)


def _time_attribute(value: Any, path: str) -> Any:
    """A time (ISO 8601 or epoch seconds) in its stored attribute form."""
    return normalize_value(epoch_or_iso(value, path), path)


def _optional_bool(value: Any, path: str) -> bool | None:
    if not isinstance(value, bool | None):
        raise ValidationError(f"{path}: expected true or false", field=path)
    return value


def _list_ids(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list) or any(
        isinstance(item, bool) or not isinstance(item, str | int) for item in value
    ):
        raise ValidationError(f"{path}: expected a list of list ids", field=path)
    return normalize_value(value, path)


def _plain_value(value: Any, path: str) -> Any:
    if value is None or not isinstance(value, str | int | float | bool):
        raise ValidationError(f"{path}: expected a string, a number or a boolean", field=path)
    return normalize_value(value, path)


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{path}: expected a string", field=path)
    return value


_BASE64URL = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")


def _base64url(value: Any, path: str) -> str:
    if not isinstance(value, str) or len(value) > 255 or not _BASE64URL.match(value):
        raise ValidationError(f"{path}: expected a base64url string", field=path)
    return value


def _push_endpoint(value: Any, path: str) -> str:
    """An https URL of a public host (resolved now); see ``ENGAGE_PUSH_ALLOW_PRIVATE``."""
    return check_url(value, path, allow_private=current_app.config["ENGAGE_PUSH_ALLOW_PRIVATE"])


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(f"{path}: expected a number", field=path)
    return value


# --- fields and bodies -------------------------------------------------------------------

CUSTOMER_ID = Field(
    {"type": ["string", "integer"], "description": "The host's customer id"},
    check_customer_id,
    required=True,
)
EVENT = Field(
    {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH},
    check_name,
    required=True,
)
ATTRIBUTES = Field(
    {
        "type": "object",
        "description": "Names (1-128 characters, no quotes, backslashes or control characters) "
        "to plain values; null removes an attribute.",
        "additionalProperties": {"type": ["string", "number", "boolean", "null", "array"]},
    },
    normalize_mapping,
    nullable=True,
)
EMAIL = Field({"type": "string", "format": "email"}, check_email, nullable=True)
ISO_TIME = Field({"type": "string", "format": "date-time"}, check_timestamp, nullable=True)
TIME = Field(
    {
        "oneOf": [
            {"type": "string", "format": "date-time"},
            {"type": "number", "description": "seconds since the epoch"},
        ]
    },
    epoch_or_iso,
    nullable=True,
)

IDENTIFY = Body(
    {"id": CUSTOMER_ID, "email": EMAIL, "attributes": ATTRIBUTES},
    example={
        "id": "42",
        "email": "ada@example.com",
        "attributes": {"plan": "pro", "city": "Lagos"},
    },
)
TRACK = Body(
    {"id": CUSTOMER_ID, "event": EVENT, "properties": ATTRIBUTES, "timestamp": ISO_TIME},
    example={
        "id": "42",
        "event": "Purchase",
        "properties": {"amount": 12.5},
        "timestamp": "2026-01-31T09:30:00Z",
    },
)
TRACK_BATCH = Body(
    {
        "batch": Field(
            {
                "type": "array",
                "minItems": 1,
                "description": "At most ENGAGE_MAX_BATCH events (1000 by default)",
                "items": TRACK.json_schema(),
            },
            _batch,
            required=True,
        )
    },
    example={"batch": [TRACK.example]},
)
BROWSER_TRACK = Body(
    {"event": Field(EVENT.schema, _browser_event, required=True), "properties": ATTRIBUTES},
    example={"event": "Viewed pricing", "properties": {"plan": "pro"}},
    description="event: one of ENGAGE_BROWSER_EVENTS when that setting is a list",
)
PUSH_KEYS = Body(
    {
        name: Field({"type": "string", "pattern": _BASE64URL.pattern}, _base64url, required=True)
        for name in ("p256dh", "auth")
    }
)
PUSH_SUBSCRIPTION = Body(
    {
        # The endpoint is checked last: it is the one check that resolves a host name.
        "keys": nested(PUSH_KEYS, required=True),
        "expirationTime": Field({"type": "number"}, _number, nullable=True),
        "endpoint": Field(
            {
                "type": "string",
                "format": "uri",
                "description": "The push service's https URL; its host must resolve to public "
                "addresses only (unless ENGAGE_PUSH_ALLOW_PRIVATE)",
            },
            _push_endpoint,
            required=True,
        ),
    },
    example={
        "endpoint": "https://push.example.com/send/abc",
        "expirationTime": None,
        "keys": {
            "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-"
            "Ts1XbjhazAkj7I99e8QcYP7DkM",
            "auth": "tBHItJI5svbpez7KI4CCXg",
        },
    },
)
PUSH_ENDPOINT = Body(
    {"endpoint": Field({"type": "string"}, _string, required=True)},
    example={"endpoint": "https://push.example.com/send/abc"},
)

#: Engage.so's standard user fields stored as text attributes under their own names.
TEXT_FIELDS = (
    "number",
    "first_name",
    "last_name",
    "device_token",
    "device_platform",
    "tz",
    "app_version",
    "app_build",
)
V1_USER = Body(
    {
        "id": Field({"type": ["string", "integer"], "description": "Must equal the id in the URL"}),
        "meta": ATTRIBUTES,
        **{
            name: Field(
                {"type": ["string", "integer", "null"] if name == "number" else ["string", "null"]},
                _phone_number if name == "number" else _text_attribute,
            )
            for name in TEXT_FIELDS
        },
        "is_account": Field({"type": ["boolean", "null"]}, _optional_bool),
        "lists": Field({"type": "array", "items": {"type": ["string", "integer"]}}, _list_ids),
        "app_last_active": Field(TIME.schema, _time_attribute, nullable=True),
        "email": EMAIL,
        "created_at": TIME,
    },
    example={
        "email": "dan@mail.app",
        "first_name": "Dan",
        "created_at": "2020-05-30T09:30:10Z",
        "meta": {"plan": "Premium"},
    },
)
V1_EVENT = Body(
    {
        "event": EVENT,
        "properties": ATTRIBUTES,
        "value": Field({"type": ["string", "number", "boolean"]}, _plain_value),
        "timestamp": TIME,
    },
    example={"event": "New badge", "value": "gold", "timestamp": "2020-05-30T09:30:10Z"},
)
V1_MERGE = Body(
    {
        "source": Field({"type": ["string", "integer"]}, required=True),
        "destination": Field({"type": ["string", "integer"]}, required=True),
    },
    example={"source": "anon-123", "destination": "42"},
)
