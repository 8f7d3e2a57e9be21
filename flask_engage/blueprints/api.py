"""Server-to-server API (bearer keys) and browser tracking for the host's own pages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flask import jsonify, request
from flask.typing import ResponseReturnValue

from ..db import host_session
from ..models import utcnow
from ..segments.schema import json_schema
from ..tracking import CustomerPatch, TrackItem, store
from .common import ApiError, bp, json_body, require_api_key, visitor
from .limits import limit_visitor
from .openapi import ERROR, OK, documented, json_answer
from .schemas import BROWSER_TRACK, IDENTIFY, TRACK, TRACK_BATCH


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


def track_item(customer_id: str, event: Mapping[str, Any]) -> TrackItem:
    """A checked ``TRACK``-shaped body as the item :func:`save` stores."""
    occurred_at = event.get("timestamp") or utcnow()
    return customer_id, event["event"], event.get("properties", {}), occurred_at


@bp.post("/api/identify")
@documented("Create or update a customer", "API", body=IDENTIFY, auth="keys")
@require_api_key
def api_identify() -> ResponseReturnValue:
    """Create or update one customer: ``{"id", "email", "attributes"}``."""
    data = IDENTIFY.parse(json_body())
    patch = CustomerPatch(email=data.get("email"), attributes=data.get("attributes", {}))
    save({data["id"]: patch})
    return jsonify({"ok": True, "id": data["id"]})


@bp.post("/api/track")
@documented(
    "Record one event, or a batch of up to ENGAGE_MAX_BATCH (all or nothing)",
    "API",
    body=(TRACK_BATCH, TRACK),
    auth="keys",
)
@require_api_key
def api_track() -> ResponseReturnValue:
    """Record one event, or ``{"batch": [...]}`` of up to ``ENGAGE_MAX_BATCH`` (all or nothing)."""
    data = json_body()
    events = TRACK_BATCH.parse(data)["batch"] if "batch" in data else [TRACK.parse(data)]
    save({}, [track_item(event["id"], event) for event in events])
    return jsonify({"ok": True, "tracked": len(events)})


@bp.post("/browser/track")
@documented(
    "Record an event for the signed-in visitor (same origin only)",
    "Browser",
    {"200": OK, "403": ERROR},
    body=BROWSER_TRACK,
    auth="session",
    limited=True,
)
def browser_track() -> ResponseReturnValue:
    """Track an event for the signed-in visitor of the host's own pages (same origin).

    Anything sent here is chosen by the visitor: ``ENGAGE_BROWSER_EVENTS`` limits the
    names, and segments that grant something should not rest on these events.
    """
    origin = request.headers.get("Origin")
    if origin is not None and origin.rstrip("/") != request.host_url.rstrip("/"):
        raise ApiError(403, "origin: cross-origin tracking is not allowed", "origin")
    if request.headers.get("Sec-Fetch-Site") not in (None, "same-origin"):
        raise ApiError(403, "origin: cross-site tracking is not allowed", "origin")
    customer_id = visitor()
    limit_visitor(customer_id)
    event = BROWSER_TRACK.parse(json_body())
    save({}, [track_item(customer_id, event)])
    return jsonify({"ok": True})


@bp.get("/api/filter-schema")
@documented(
    "The segment filter format as JSON Schema (draft 2020-12)",
    "Segments",
    {"200": json_answer("JSON Schema", {"type": "object"})},
)
def filter_schema() -> ResponseReturnValue:
    """The segment filter format as JSON Schema, for builders and API clients."""
    return jsonify(json_schema())
