"""Engage.so's public Lists API (``/v1/lists...``), with the shapes Engage documents.

A list's ``id`` is Engage's id as text; a slug works wherever an id does. Lists are
paged newest first with ``next_cursor`` / ``previous_cursor``. Subscribing through
the API is trusted (the caller holds a key and secret): the person is subscribed at
once, also on a double opt-in list. ``DELETE /v1/lists/<id>`` archives the list.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from flask import jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import operation_session
from ..errors import ValidationError
from ..lists.members import remove as remove_members
from ..lists.members import subscribe, unsubscribe
from ..lists.optin import find_by_email
from ..lists.service import (
    archive_list,
    broadcast_counts,
    check_description,
    check_flag,
    check_redirect_url,
    create_list,
    get_list,
    open_list,
    subscriber_counts,
    update_list,
)
from ..models import Customer, CustomerList
from ..tracking import CustomerPatch, store
from .common import ApiError, bp, json_body, require_api_key
from .openapi import ERROR, documented, json_answer
from .schemas import TEXT_FIELDS, V1_USER, Body, Field
from .v1 import open_lists, optional_body, user_id

#: Lists per page: Engage's default and largest.
DEFAULT_LIMIT, MAX_LIMIT = 10, 30

LIST_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "slug": {"type": "string"},
        "title": {"type": "string"},
        "description": {"type": ["string", "null"]},
        "subscriber_count": {"type": "integer", "description": "Includes pending confirmations"},
        "broadcast_count": {"type": "integer"},
        "double_optin": {"type": "boolean"},
        "public": {"type": "boolean", "description": "Has a public subscribe form"},
        "redirect_url": {"type": ["string", "null"]},
        "archived": {"type": "boolean"},
        "created_at": {"type": "string", "format": "date-time"},
    },
}
STATUS_OK = json_answer("Done", {"type": "object", "properties": {"status": {"const": "ok"}}})
PAGE = json_answer(
    "A page of lists, newest first",
    {
        "type": "object",
        "properties": {
            "data": {"type": "array", "items": LIST_SCHEMA},
            "next_cursor": {"type": "string"},
            "previous_cursor": {"type": "string"},
        },
    },
)
PAGING = [
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 10},
    },
    {"name": "next_cursor", "in": "query", "schema": {"type": "string"}},
    {"name": "previous_cursor", "in": "query", "schema": {"type": "string"}},
]


def _title(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{path}: expected a non-empty title", field=path)
    return value


def _nullable_text(check: Any) -> Any:
    """A check that reads ``null`` as "clear it" (``""``) instead of "leave it"."""
    return lambda value, path: "" if value is None else check(value, path) or ""


LIST_FIELDS = {
    "title": Field({"type": "string", "minLength": 1, "maxLength": 200}, _title),
    "description": Field({"type": ["string", "null"]}, _nullable_text(check_description)),
    "redirect_url": Field(
        {"type": ["string", "null"], "format": "uri"}, _nullable_text(check_redirect_url)
    ),
    "double_optin": Field({"type": "boolean"}, check_flag),
    "public": Field({"type": "boolean"}, check_flag),
}
NEW_LIST = Body(
    {**LIST_FIELDS, "title": Field(LIST_FIELDS["title"].schema, _title, required=True)},
    example={"title": "Waitlist", "description": "Product waiting list", "double_optin": True},
    description="public (an extension of Engage's API): anyone may use the list's public form",
)
LIST_CHANGES = Body(LIST_FIELDS, example={"title": "Monthly newsletter"})
SUBSCRIBER = Body(
    {
        name: V1_USER.fields[name]
        for name in ("email", "number", "first_name", "last_name", "created_at", "meta")
    },
    example={"email": "dan@mail.app", "first_name": "Dan", "meta": {"plan": "Premium"}},
    description="email or number is required; an existing user (by email, then number) is "
    "updated and subscribed",
)
SUBSCRIPTION = Body(
    {"subscribed": Field({"type": "boolean"}, check_flag, required=True)},
    example={"subscribed": False},
)
USER_LISTS = Body(
    {"lists": replace(V1_USER.fields["lists"], required=True)},
    example={"lists": ["waitlist", "12"]},
)


def list_json(session: Session, found: CustomerList) -> dict[str, Any]:
    """A list as Engage's API answers it (plus ``slug``, ``public``, ``archived``)."""
    return _lists_json(session, [found])[0]


def _lists_json(session: Session, found: list[CustomerList]) -> list[dict[str, Any]]:
    ids = [item.id for item in found]
    subscribers, broadcasts = subscriber_counts(session, ids), broadcast_counts(session, ids)
    return [
        {
            "id": str(item.id),
            "slug": item.slug,
            "title": item.name,
            "description": item.description,
            "subscriber_count": subscribers.get(item.id, 0),
            "broadcast_count": broadcasts.get(item.id, 0),
            "double_optin": item.double_optin,
            "public": item.public,
            "redirect_url": item.redirect_url,
            "archived": item.archived_at is not None,
            "created_at": item.created_at.isoformat(),
        }
        for item in found
    ]


def _list_settings(data: dict[str, Any]) -> dict[str, Any]:
    """``update_list`` keywords from a checked body (``title`` is the list's name)."""
    return {("name" if key == "title" else key): value for key, value in data.items()}


@bp.post("/v1/lists")
@documented(
    "Engage.so v1: create a list",
    "Engage v1",
    {"200": json_answer("The list", LIST_SCHEMA)},
    body=NEW_LIST,
    auth="keys",
)
@require_api_key
def v1_create_list() -> ResponseReturnValue:
    """Create a list: ``{"title", "description", "redirect_url", "double_optin"}``."""
    data = NEW_LIST.parse(json_body())
    with operation_session() as session:
        created = create_list(
            session,
            data["title"],
            description=data.get("description"),
            public=data.get("public", False),
            double_optin=data.get("double_optin", False),
            redirect_url=data.get("redirect_url"),
        )
        return jsonify(list_json(session, created))


def _cursor(name: str) -> int | None:
    value = request.args.get(name)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise ApiError(400, f"{name}: not a cursor of this API", name)
    return int(value)


@bp.get("/v1/lists")
@documented(
    "Engage.so v1: lists, newest first, with cursor paging (archived ones are left out)",
    "Engage v1",
    {"200": PAGE},
    auth="keys",
    query=PAGING,
)
@require_api_key
def v1_lists() -> ResponseReturnValue:
    """A page of lists: ``{"data": [...], "next_cursor", "previous_cursor"}``."""
    raw = request.args.get("limit", str(DEFAULT_LIMIT))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(400, f"limit: expected a whole number from 1 to {MAX_LIMIT}", "limit")
    limit = int(raw)
    after, before = _cursor("next_cursor"), _cursor("previous_cursor")
    if after is not None and before is not None:
        raise ApiError(400, "previous_cursor: use only one of next_cursor and previous_cursor")
    query = select(CustomerList).where(CustomerList.archived_at.is_(None)).limit(limit + 1)
    with operation_session() as session:
        if before is not None:
            rows = list(
                session.scalars(query.where(CustomerList.id > before).order_by(CustomerList.id))
            )
            more_before, page = len(rows) > limit, rows[:limit][::-1]
            more_after = bool(page)
        else:
            if after is not None:
                query = query.where(CustomerList.id < after)
            rows = list(session.scalars(query.order_by(CustomerList.id.desc())))
            more_before, page = after is not None and bool(rows), rows[:limit]
            more_after = len(rows) > limit
        answer: dict[str, Any] = {"data": _lists_json(session, page)}
    if more_after:
        answer["next_cursor"] = str(page[-1].id)
    if more_before:
        answer["previous_cursor"] = str(page[0].id)
    return jsonify(answer)


@bp.get("/v1/lists/<list_id>")
@documented(
    "Engage.so v1: a list by id",
    "Engage v1",
    {"200": json_answer("The list", LIST_SCHEMA), "404": ERROR},
    auth="keys",
)
@require_api_key
def v1_get_list(list_id: str) -> ResponseReturnValue:
    """One list (by id, or slug)."""
    with operation_session() as session:
        return jsonify(list_json(session, get_list(session, list_id, "id")))


@bp.put("/v1/lists/<list_id>")
@documented(
    "Engage.so v1: update a list",
    "Engage v1",
    {"200": json_answer("The updated list", LIST_SCHEMA), "404": ERROR},
    body=LIST_CHANGES,
    auth="keys",
)
@require_api_key
def v1_update_list(list_id: str) -> ResponseReturnValue:
    """Change a list's title, description, redirect URL or double opt-in."""
    data = LIST_CHANGES.parse(optional_body())
    with operation_session() as session:
        found = update_list(session, get_list(session, list_id, "id"), **_list_settings(data))
        return jsonify(list_json(session, found))


@bp.delete("/v1/lists/<list_id>")
@documented(
    "Engage.so v1: archive a list (no new subscribers; existing ones stay)",
    "Engage v1",
    {"200": STATUS_OK, "404": ERROR},
    auth="keys",
)
@require_api_key
def v1_archive_list(list_id: str) -> ResponseReturnValue:
    """Archive a list: refused while an unsent broadcast or active automation uses it."""
    with operation_session() as session:
        archive_list(session, get_list(session, list_id, "id"))
    return jsonify({"status": "ok"})


def _subscriber(session: Session, data: dict[str, Any]) -> str:
    """The host id of the user a subscribe call names (by email, then number), created
    if unknown (host id: the email in lower case, else the number) and updated."""
    email, number = data.get("email"), data.get("number")
    found = find_by_email(session, email) if email else None
    if found is None and number:
        found = session.scalar(
            select(Customer)
            .where(Customer.attributes["number"].as_string() == number)
            .order_by(Customer.id)
            .limit(1)
        )
    if found is not None:
        external_id: str = found.external_id
    else:
        external_id = email.lower() if email else str(number)
    attributes = dict(data.get("meta", {}))
    attributes.update({name: data[name] for name in TEXT_FIELDS if name in data})
    store(
        session,
        {
            external_id: CustomerPatch(
                email=email, attributes=attributes, created_at=data.get("created_at")
            )
        },
    )
    return external_id


@bp.post("/v1/lists/<list_id>/subscribers")
@documented(
    "Engage.so v1: create (or find) a user and subscribe them to a list",
    "Engage v1",
    {"200": json_answer("The user's id", {"type": "object", "properties": {"uid": {}}})},
    body=SUBSCRIBER,
    auth="keys",
)
@require_api_key
def v1_subscribe(list_id: str) -> ResponseReturnValue:
    """Subscribe a user given by email (or number), creating or updating them."""
    data = SUBSCRIBER.parse(json_body())
    if not data.get("email") and not data.get("number"):
        raise ApiError(400, "email: required (or number)", "email")
    with operation_session() as session:
        found = open_list(session, list_id, "id")
        external_id = _subscriber(session, data)
        customer_id = session.scalar(select(Customer.id).where(Customer.external_id == external_id))
        assert customer_id is not None
        subscribe(session, found.id, [customer_id])
    return jsonify({"uid": external_id})


def _customer_id(session: Session, uid: str) -> int:
    external_id = user_id(uid)
    found = session.scalar(select(Customer.id).where(Customer.external_id == external_id))
    if found is None:
        raise ApiError(404, f"uid: no user {external_id!r}", "uid")
    return found


@bp.put("/v1/lists/<list_id>/subscribers/<uid>")
@documented(
    "Engage.so v1: subscribe (true) or unsubscribe (false) a user",
    "Engage v1",
    {
        "200": json_answer(
            "The new status", {"type": "object", "properties": {"subscribed": {"type": "boolean"}}}
        ),
        "404": ERROR,
    },
    body=SUBSCRIPTION,
    auth="keys",
)
@require_api_key
def v1_subscription(list_id: str, uid: str) -> ResponseReturnValue:
    """Set a user's subscription to a list (unsubscribing leaves channels alone)."""
    wanted = SUBSCRIPTION.parse(json_body())["subscribed"]
    with operation_session() as session:
        found = (open_list if wanted else get_list)(session, list_id, "id")
        customer_id = _customer_id(session, uid)
        if wanted:
            subscribe(session, found.id, [customer_id])
        else:
            unsubscribe(session, found.id, [customer_id])
    return jsonify({"subscribed": wanted})


@bp.delete("/v1/lists/<list_id>/subscribers/<uid>")
@documented(
    "Engage.so v1: remove a user from a list",
    "Engage v1",
    {"200": STATUS_OK, "404": ERROR},
    auth="keys",
)
@require_api_key
def v1_remove_subscriber(list_id: str, uid: str) -> ResponseReturnValue:
    """Take a user off a list, whatever their status."""
    with operation_session() as session:
        found = get_list(session, list_id, "id")
        remove_members(session, found.id, [_customer_id(session, uid)])
    return jsonify({"status": "ok"})


@bp.post("/v1/users/<uid>/lists")
@documented(
    "Engage.so v1: subscribe a user to lists (all of them, or none when one is refused)",
    "Engage v1",
    {"200": STATUS_OK, "400": ERROR, "404": ERROR},
    body=USER_LISTS,
    auth="keys",
)
@require_api_key
def v1_add_user_to_lists(uid: str) -> ResponseReturnValue:
    """Subscribe an existing user to every list named (ids or slugs)."""
    refs = USER_LISTS.parse(json_body())["lists"]
    with operation_session() as session:
        customer_id = _customer_id(session, uid)
        for found in open_lists(session, refs):
            subscribe(session, found.id, [customer_id])
    return jsonify({"status": "ok"})


@bp.delete("/v1/users/<uid>/lists/<list_id>")
@documented(
    "Engage.so v1: remove a user from a list",
    "Engage v1",
    {"200": STATUS_OK, "404": ERROR},
    auth="keys",
)
@require_api_key
def v1_remove_user_from_list(uid: str, list_id: str) -> ResponseReturnValue:
    """Take a user off a list (as ``DELETE /v1/lists/<id>/subscribers/<uid>``)."""
    return v1_remove_subscriber(list_id, uid)
