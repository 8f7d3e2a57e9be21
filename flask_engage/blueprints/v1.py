"""Engage.so-compatible v1 user API (``/v1/users/...``).

Code written for Engage's official SDKs works against the host by changing the
SDKs' API root to ``<host><ENGAGE_URL_PREFIX>/v1``. Standard profile fields
arrive at the top level, custom attributes in ``meta``; both become attributes
(``email`` is the customer's address). ``lists`` subscribes the user to those lists
(ids or slugs), in the same transaction as the profile.
"""

from __future__ import annotations

from typing import Any

from flask import jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session

from ..customers import forget
from ..db import host_session
from ..errors import NotFound, StateError
from ..lists.members import subscribe
from ..lists.service import open_list
from ..merge import merge_customers
from ..models import Customer, CustomerList, utcnow
from ..tracking import CustomerPatch, check_customer_id, store
from .api import save
from .common import ApiError, bp, check_text, json_body, require_api_key
from .openapi import CUSTOMER as CUSTOMER_SCHEMA
from .openapi import ERROR, OK, documented, json_answer
from .schemas import TEXT_FIELDS, V1_EVENT, V1_MERGE, V1_USER


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


def user_id(uid: str) -> str:
    """A user id from a URL, as the stored customer id (400 naming ``id`` otherwise)."""
    check_text(uid, "id")
    return check_customer_id(uid, "id")


def optional_body() -> dict[str, Any]:
    """The JSON body; a request without any body counts as ``{}``."""
    if not request.content_length and not request.mimetype and not request.data:
        return {}
    return json_body()


def _user_patch(external_id: str, body: dict[str, Any]) -> tuple[CustomerPatch, list[Any]]:
    """The profile change a v1 body asks for, and the lists it subscribes the user to."""
    data = V1_USER.parse(body)
    if "id" in data and str(data["id"]) != external_id:
        raise ApiError(400, "id: does not match the id in the URL", "id")
    attributes = dict(data.get("meta", {}))
    for name in (*TEXT_FIELDS, "is_account", "app_last_active"):
        if name in data:
            attributes[name] = data[name]
    if "tz" in data:  # Engage's field; automations and templates read ``timezone``
        attributes["timezone"] = data["tz"]
    patch = CustomerPatch(
        email=data.get("email"), attributes=attributes, created_at=data.get("created_at")
    )
    return patch, list(data.get("lists", []))


def open_lists(session: Session, refs: list[Any], field: str = "lists") -> list[CustomerList]:
    """The lists ``refs`` name, each open to subscribers; 400 naming the first that is
    not (unknown or archived), before anything is written."""
    found = []
    for index, ref in enumerate(refs):
        try:
            found.append(open_list(session, ref, f"{field}[{index}]"))
        except (NotFound, StateError) as exc:
            raise ApiError(400, str(exc), f"{field}[{index}]") from None
    return found


@bp.put("/v1/users/<uid>")
@documented(
    "Engage.so v1: create or update a user (standard fields + meta)",
    "Engage v1",
    {"200": json_answer("The customer", CUSTOMER_SCHEMA)},
    body=V1_USER,
    body_required=False,
    auth="keys",
)
@require_api_key
def v1_identify(uid: str) -> ResponseReturnValue:
    """Create or update a user (Engage's ``identify`` and ``addAttribute``)."""
    external_id = user_id(uid)
    patch, list_refs = _user_patch(external_id, optional_body())
    session = host_session()
    try:
        lists = open_lists(session, list_refs)
        ids, _ = store(session, {external_id: patch}, ())
        for found in lists:
            subscribe(session, found.id, [ids[external_id]])
        session.commit()
    except Exception:
        session.rollback()
        raise
    customer = session.get(Customer, ids[external_id], populate_existing=True)
    assert customer is not None
    return jsonify(customer_json(customer))


@bp.post("/v1/users/<uid>/events")
@documented("Engage.so v1: record an event", "Engage v1", {"200": OK}, body=V1_EVENT, auth="keys")
@require_api_key
def v1_track(uid: str) -> ResponseReturnValue:
    """Record an event: ``{"event", "value", "properties", "timestamp"}``."""
    external_id = user_id(uid)
    data = V1_EVENT.parse(json_body())
    properties = dict(data.get("properties", {}))
    if "value" in data:
        properties["value"] = data["value"]
    save({}, [(external_id, data["event"], properties, data.get("timestamp") or utcnow())])
    return jsonify({"ok": True, "event": data["event"]})


@bp.post("/v1/users/merge")
@documented(
    "Engage.so v1: merge source into destination (source removed)",
    "Engage v1",
    {"200": json_answer("The destination", CUSTOMER_SCHEMA), "404": ERROR},
    body=V1_MERGE,
    auth="keys",
)
@require_api_key
def v1_merge() -> ResponseReturnValue:
    """Merge ``source`` into ``destination`` (the source is removed)."""
    data = V1_MERGE.parse(json_body())
    customer = merge_customers(data["source"], data["destination"])
    return jsonify(customer_json(customer))


@bp.delete("/v1/users/<uid>")
@documented(
    "Engage.so v1: delete a user (erased with its events, memberships, subscriptions and runs)",
    "Engage v1",
    {"200": OK, "404": ERROR},
    auth="keys",
)
@require_api_key
def v1_delete(uid: str) -> ResponseReturnValue:
    """Erase a user, as ``engage.forget`` does; messages stay for counts, anonymous."""
    external_id = user_id(uid)
    session = host_session()
    try:
        erased = forget(session, [external_id])
        if not erased.customers:
            raise ApiError(404, f"id: no user {external_id!r}", "id")
        session.commit()
    except Exception:
        session.rollback()
        raise
    return jsonify({"ok": True, "id": external_id, "erased": erased.as_dict()})


@bp.route("/v1/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def v1_unknown(path: str) -> ResponseReturnValue:
    """Any other v1 route (accounts, conversions...) is not offered here."""
    raise ApiError(404, f"path: /v1/{path} is not supported by this server", "path")
