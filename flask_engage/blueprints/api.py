"""Server-to-server API (bearer keys) and browser tracking for the host's own pages."""

from __future__ import annotations

from typing import Any

from flask import current_app, jsonify, request
from sqlalchemy.orm import Session

from ..context import host_session
from ..errors import ValidationError
from ..tracking import CustomerPatch, check_customer_id, check_email, check_event, store
from ..values import normalize_mapping
from .common import ApiError, bp, json_body, only_fields, require_api_key

TRACK_FIELDS = {"id", "event", "properties", "timestamp"}


def _commit(session: Session) -> None:
    try:
        session.commit()
    except Exception:
        session.rollback()
        raise


def _identify_patch(data: dict[str, Any]) -> tuple[str, CustomerPatch]:
    only_fields(data, {"id", "email", "attributes"})
    if "id" not in data:
        raise ApiError(400, "id: required", "id")
    external_id = check_customer_id(data["id"])
    return external_id, CustomerPatch(
        email=check_email(data.get("email")),
        attributes=normalize_mapping(data.get("attributes"), "attributes"),
    )


def _track_item(data: Any, prefix: str = "") -> tuple[str, str, dict[str, Any], Any]:
    if not isinstance(data, dict):
        raise ApiError(400, f"{prefix.rstrip('.') or 'body'}: expected an object", prefix.rstrip(".") or "body")
    only_fields(data, TRACK_FIELDS, prefix)
    for required in ("id", "event"):
        if required not in data:
            raise ApiError(400, f"{prefix}{required}: required", f"{prefix}{required}")
    return check_event(data["id"], data["event"], data.get("properties"), data.get("timestamp"), prefix)


@bp.post("/api/identify")
@require_api_key
def api_identify():
    external_id, patch = _identify_patch(json_body())
    session = host_session()
    ids, _ = store(session, {external_id: patch})
    _commit(session)
    return jsonify({"ok": True, "id": external_id})


@bp.post("/api/track")
@require_api_key
def api_track():
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
    session = host_session()
    _, event_ids = store(session, {}, items)
    _commit(session)
    return jsonify({"ok": True, "tracked": len(event_ids)})


@bp.post("/browser/track")
def browser_track():
    """Track an event for the signed-in visitor of the host's own pages (same origin)."""
    origin = request.headers.get("Origin")
    if origin is not None and origin.rstrip("/") != request.host_url.rstrip("/"):
        raise ApiError(403, "origin: cross-origin tracking is not allowed")
    data = json_body()
    only_fields(data, {"event", "properties"})
    customer_id = current_app.extensions["engage"].current_identity()
    if customer_id is None:
        raise ApiError(401, "identity: no signed-in customer")
    if "event" not in data:
        raise ApiError(400, "event: required", "event")
    item = check_event(customer_id, data["event"], data.get("properties"), None)
    session = host_session()
    store(session, {}, [item])
    _commit(session)
    return jsonify({"ok": True})


__all__ = ["ValidationError"]
