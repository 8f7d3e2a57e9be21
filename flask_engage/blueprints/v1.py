"""Engage.so-compatible v1 user API (``/v1/users/...``).

Code written for Engage's official SDKs works against the host by changing the
SDKs' API root to ``<host><ENGAGE_URL_PREFIX>/v1``. Standard profile fields
arrive at the top level, custom attributes in ``meta``; both become attributes
(``email`` is the customer's address).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from flask import jsonify, request

from ..db import host_session
from ..errors import ValidationError
from ..merge import merge_customers
from ..models import Customer, utcnow
from ..tracking import CustomerPatch, check_customer_id, check_email, check_timestamp
from ..values import check_name, normalize_mapping, normalize_value
from .api import save
from .common import ApiError, bp, check_text, json_body, only_fields, require_api_key

#: Standard fields stored as text attributes under their own names.
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
USER_FIELDS = {
    "id",
    "email",
    "meta",
    "created_at",
    "is_account",
    "lists",
    "app_last_active",
    *TEXT_FIELDS,
}
EVENT_FIELDS = {"event", "value", "properties", "timestamp"}


def parse_time(value: Any, field: str) -> datetime:
    """An ISO 8601 string or a number of seconds since the epoch, as aware UTC."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            if not math.isfinite(value):
                raise ValueError(value)
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise ValidationError(
                f"{field}: {value!r} is not a valid number of seconds since the epoch", field=field
            ) from None
    return check_timestamp(value, field)


def customer_json(customer: Customer) -> dict[str, Any]:
    """A customer as the v1 API answers it."""
    return {
        "id": customer.external_id,
        "uid": customer.external_id,
        "email": customer.email,
        "attributes": customer.attributes or {},
        "created_at": customer.created_at.isoformat(),
        "updated_at": customer.updated_at.isoformat(),
    }


def _user_id(uid: str) -> str:
    check_text(uid, "id")
    return check_customer_id(uid, "id")


def _body() -> dict[str, Any]:
    """The JSON body; a request without any body counts as ``{}``."""
    if not request.content_length and not request.mimetype and not request.data:
        return {}
    return json_body()


def _user_patch(external_id: str, data: dict[str, Any]) -> CustomerPatch:
    only_fields(data, USER_FIELDS)
    if "id" in data and str(data["id"]) != external_id:
        raise ApiError(400, "id: does not match the id in the URL", "id")
    attributes = normalize_mapping(data.get("meta"), "meta")
    for name in TEXT_FIELDS:
        if name not in data:
            continue
        value = data[name]
        if name == "number" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if value is not None and not isinstance(value, str):
            raise ApiError(400, f"{name}: expected a string", name)
        attributes[name] = normalize_value(value, name)
    if "is_account" in data:
        if not isinstance(data["is_account"], bool | None):
            raise ApiError(400, "is_account: expected true or false", "is_account")
        attributes["is_account"] = data["is_account"]
    if "lists" in data:
        lists = data["lists"]
        if not isinstance(lists, list) or any(
            isinstance(item, bool) or not isinstance(item, str | int) for item in lists
        ):
            raise ApiError(400, "lists: expected a list of list ids", "lists")
        attributes["lists"] = normalize_value(lists, "lists")
    if data.get("app_last_active") is not None:
        attributes["app_last_active"] = normalize_value(
            parse_time(data["app_last_active"], "app_last_active"), "app_last_active"
        )
    created_at = data.get("created_at")
    return CustomerPatch(
        email=check_email(data.get("email")),
        attributes=attributes,
        created_at=parse_time(created_at, "created_at") if created_at is not None else None,
    )


@bp.put("/v1/users/<uid>")
@require_api_key
def v1_identify(uid: str):
    """Create or update a user (Engage's ``identify`` and ``addAttribute``)."""
    external_id = _user_id(uid)
    patch = _user_patch(external_id, _body())
    ids = save({external_id: patch})
    customer = host_session().get(Customer, ids[external_id], populate_existing=True)
    assert customer is not None
    return jsonify(customer_json(customer))


@bp.post("/v1/users/<uid>/events")
@require_api_key
def v1_track(uid: str):
    """Record an event: ``{"event", "value", "properties", "timestamp"}``."""
    external_id = _user_id(uid)
    data = json_body()
    only_fields(data, EVENT_FIELDS)
    if "event" not in data:
        raise ApiError(400, "event: required", "event")
    name = check_name(data["event"], "event")
    properties = normalize_mapping(data.get("properties"), "properties")
    if "value" in data:
        value = data["value"]
        if value is None or not isinstance(value, str | int | float | bool):
            raise ApiError(400, "value: expected a string, a number or a boolean", "value")
        properties["value"] = normalize_value(value, "value")
    timestamp = data.get("timestamp")
    occurred_at = parse_time(timestamp, "timestamp") if timestamp is not None else None
    item = (external_id, name, properties, occurred_at or utcnow())
    save({}, [item])
    return jsonify({"ok": True, "event": name})


@bp.post("/v1/users/merge")
@require_api_key
def v1_merge():
    """Merge ``source`` into ``destination`` (the source is removed)."""
    data = json_body()
    only_fields(data, {"source", "destination"})
    for field in ("source", "destination"):
        if field not in data:
            raise ApiError(400, f"{field}: required", field)
    customer = merge_customers(data["source"], data["destination"])
    return jsonify(customer_json(customer))


@bp.route("/v1/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def v1_unknown(path: str):
    """Any other v1 route (accounts, conversions...) is not offered here."""
    raise ApiError(404, f"path: /v1/{path} is not supported by this server", "path")
