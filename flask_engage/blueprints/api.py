"""Server-to-server API (bearer keys) and browser tracking for the host's own pages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flask import current_app, jsonify, request

from ..db import host_session
from ..segments.schema import json_schema
from ..tracking import (
    CustomerPatch,
    TrackItem,
    check_customer_id,
    check_email,
    check_event,
    store,
)
from ..values import normalize_mapping
from .common import ApiError, bp, json_body, only_fields, require_api_key

TRACK_FIELDS = {"id", "event", "properties", "timestamp"}


def save(patches: Mapping[str, CustomerPatch], events: Sequence[TrackItem] = ()) -> dict[str, int]:
    """Store validated data in the host session and commit (the tracking signals go
    out after the commit).

    Returns external id -> ``Customer.id`` of every customer touched.
    """
    session = host_session()
    try:
        ids, _ = store(session, patches, events)
        session.commit()
    except Exception:
        session.rollback()
        raise
    return ids


def _identify_patch(data: dict[str, Any]) -> tuple[str, CustomerPatch]:
    only_fields(data, {"id", "email", "attributes"})
    if "id" not in data:
        raise ApiError(400, "id: required", "id")
    external_id = check_customer_id(data["id"])
    return external_id, CustomerPatch(
        email=check_email(data.get("email")),
        attributes=normalize_mapping(data.get("attributes"), "attributes"),
    )


def _track_item(data: Any, prefix: str = "") -> TrackItem:
    where = prefix.rstrip(".") or "body"
    if not isinstance(data, dict):
        raise ApiError(400, f"{where}: expected an object", where)
    only_fields(data, TRACK_FIELDS, prefix)
    for required in ("id", "event"):
        if required not in data:
            raise ApiError(400, f"{prefix}{required}: required", f"{prefix}{required}")
    return check_event(
        data["id"], data["event"], data.get("properties"), data.get("timestamp"), prefix
    )


@bp.post("/api/identify")
@require_api_key
def api_identify():
    """Create or update one customer: ``{"id", "email", "attributes"}``."""
    external_id, patch = _identify_patch(json_body())
    save({external_id: patch})
    return jsonify({"ok": True, "id": external_id})


@bp.post("/api/track")
@require_api_key
def api_track():
    """Record one event, or ``{"batch": [...]}`` of up to ``ENGAGE_MAX_BATCH`` (all or nothing)."""
    data = json_body()
    if "batch" in data:
        only_fields(data, {"batch"})
        batch = data["batch"]
        if not isinstance(batch, list) or not batch:
            raise ApiError(400, "batch: expected a non-empty list of events", "batch")
        limit = current_app.config["ENGAGE_MAX_BATCH"]
        if len(batch) > limit:
            raise ApiError(400, f"batch: more than {limit} events", "batch")
        items = [_track_item(item, f"batch[{i}].") for i, item in enumerate(batch)]
    else:
        items = [_track_item(data)]
    save({}, items)
    return jsonify({"ok": True, "tracked": len(items)})


@bp.post("/browser/track")
def browser_track():
    """Track an event for the signed-in visitor of the host's own pages (same origin)."""
    origin = request.headers.get("Origin")
    if origin is not None and origin.rstrip("/") != request.host_url.rstrip("/"):
        raise ApiError(403, "origin: cross-origin tracking is not allowed", "origin")
    if request.headers.get("Sec-Fetch-Site") not in (None, "same-origin"):
        raise ApiError(403, "origin: cross-site tracking is not allowed", "origin")
    data = json_body()
    only_fields(data, {"event", "properties"})
    customer_id = current_app.extensions["engage"].current_identity()
    if customer_id is None:
        raise ApiError(401, "identity: no signed-in customer")
    if "event" not in data:
        raise ApiError(400, "event: required", "event")
    save({}, [check_event(customer_id, data["event"], data.get("properties"), None)])
    return jsonify({"ok": True})


@bp.get("/api/filter-schema")
def filter_schema():
    """The segment filter format as JSON Schema, for builders and API clients."""
    return jsonify(json_schema())
