"""An OpenAPI 3.1 description of the blueprint's endpoints, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from flask import current_app, jsonify, request

from ..config import VERSION
from .common import bp
from .v1 import TEXT_FIELDS

ERROR = {"$ref": "#/components/responses/Error"}
UNAUTHORIZED = {"$ref": "#/components/responses/Unauthorized"}
KEYS = [{"bearer": []}, {"basic": []}]
OK = {"description": "Done", "content": {"application/json": {"schema": {"type": "object"}}}}

VALUE = {"type": ["string", "number", "boolean", "null", "array"]}
ATTRIBUTES = {
    "type": "object",
    "description": "Names (1-128 characters, no quotes, backslashes or control characters) "
    "to plain values; null removes an attribute.",
    "additionalProperties": VALUE,
}
TRACK = {
    "type": "object",
    "required": ["id", "event"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": ["string", "integer"], "description": "The host's customer id"},
        "event": {"type": "string", "minLength": 1, "maxLength": 128},
        "properties": ATTRIBUTES,
        "timestamp": {"type": "string", "format": "date-time"},
    },
}
TIME = {
    "oneOf": [
        {"type": "string", "format": "date-time"},
        {"type": "number", "description": "seconds since the epoch"},
    ],
}
V1_USER = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "id": {"type": ["string", "integer"], "description": "Must equal the id in the URL"},
        "email": {"type": ["string", "null"], "format": "email"},
        **{name: {"type": ["string", "null"]} for name in TEXT_FIELDS},
        "is_account": {"type": ["boolean", "null"]},
        "lists": {"type": "array", "items": {"type": ["string", "integer"]}},
        "created_at": TIME,
        "app_last_active": TIME,
        "meta": ATTRIBUTES,
    },
}
CUSTOMER = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "uid": {"type": "string"},
        "email": {"type": ["string", "null"]},
        "attributes": {"type": "object"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}
PUSH_SUBSCRIPTION = {
    "type": "object",
    "required": ["endpoint", "keys"],
    "additionalProperties": False,
    "properties": {
        "endpoint": {"type": "string", "format": "uri"},
        "expirationTime": {"type": ["number", "null"]},
        "keys": {
            "type": "object",
            "required": ["p256dh", "auth"],
            "additionalProperties": False,
            "properties": {"p256dh": {"type": "string"}, "auth": {"type": "string"}},
        },
    },
}
UID = {"name": "uid", "in": "path", "required": True, "schema": {"type": "string"}}


def _json(schema: dict[str, Any], example: Any) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": schema, "example": example}},
    }


def _op(
    summary: str,
    tag: str,
    responses: dict[str, Any],
    *,
    body: dict[str, Any] | None = None,
    keys: bool = False,
    session: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses, **extra}
    if body is not None:
        operation["requestBody"] = body
    if keys:
        operation["security"] = KEYS
        responses.setdefault("401", UNAUTHORIZED)
    if session:
        operation["description"] = (
            "For the host's own pages: the customer is the signed-in visitor "
            "(ENGAGE_IDENTITY or Flask-Login); no visitor gets 401."
        )
        responses.setdefault("401", UNAUTHORIZED)
    return operation


def build_spec(server: str) -> dict[str, Any]:
    """The OpenAPI document, with ``server`` (the blueprint's absolute root) as its server."""
    limits = {"400": ERROR, "413": ERROR}
    paths: dict[str, Any] = {
        "/api/identify": {
            "post": _op(
                "Create or update a customer",
                "API",
                {"200": OK, **limits},
                keys=True,
                body=_json(
                    {
                        "type": "object",
                        "required": ["id"],
                        "additionalProperties": False,
                        "properties": {
                            "id": TRACK["properties"]["id"],
                            "email": {"type": ["string", "null"], "format": "email"},
                            "attributes": ATTRIBUTES,
                        },
                    },
                    {
                        "id": "42",
                        "email": "ada@example.com",
                        "attributes": {"plan": "pro", "city": "Lagos"},
                    },
                ),
            )
        },
        "/api/track": {
            "post": _op(
                "Record one event, or a batch of up to ENGAGE_MAX_BATCH (all or nothing)",
                "API",
                {"200": OK, **limits},
                keys=True,
                body=_json(
                    {
                        "oneOf": [
                            TRACK,
                            {
                                "type": "object",
                                "required": ["batch"],
                                "additionalProperties": False,
                                "properties": {
                                    "batch": {
                                        "type": "array",
                                        "minItems": 1,
                                        "maxItems": 1000,
                                        "items": TRACK,
                                    }
                                },
                            },
                        ]
                    },
                    {
                        "batch": [
                            {
                                "id": "42",
                                "event": "Purchase",
                                "properties": {"amount": 12.5},
                                "timestamp": "2026-01-31T09:30:00Z",
                            }
                        ]
                    },
                ),
            )
        },
        "/browser/track": {
            "post": _op(
                "Record an event for the signed-in visitor (same origin only)",
                "Browser",
                {"200": OK, "400": ERROR, "403": ERROR, "413": ERROR},
                session=True,
                body=_json(
                    {
                        "type": "object",
                        "required": ["event"],
                        "additionalProperties": False,
                        "properties": {
                            "event": TRACK["properties"]["event"],
                            "properties": ATTRIBUTES,
                        },
                    },
                    {"event": "Viewed pricing", "properties": {"plan": "pro"}},
                ),
            )
        },
        "/unsubscribe/{token}": {
            "parameters": [
                {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": _op(
                "Confirmation page of an unsubscribe link",
                "Unsubscribe",
                {
                    "200": {"description": "HTML page", "content": {"text/html": {}}},
                    "400": {"description": "Bad or tampered token (HTML page)"},
                },
            ),
            "post": _op(
                "RFC 8058 one-click unsubscribe (form action=resubscribe undoes it)",
                "Unsubscribe",
                {
                    "200": {"description": "HTML page", "content": {"text/html": {}}},
                    "400": {"description": "Bad or tampered token (HTML page)"},
                },
            ),
        },
        "/api/filter-schema": {
            "get": _op(
                "The segment filter format as JSON Schema (draft 2020-12)",
                "Segments",
                {
                    "200": {
                        "description": "JSON Schema",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            )
        },
        "/push/key": {
            "get": _op(
                "The VAPID public key",
                "Push",
                {
                    "200": {
                        "description": "Key",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"publicKey": {"type": "string"}},
                                }
                            }
                        },
                    },
                    "404": ERROR,
                },
            )
        },
        "/push/subscribe": {
            "post": _op(
                "Save the visitor's PushSubscription",
                "Push",
                {"201": OK, "400": ERROR, "413": ERROR},
                session=True,
                body=_json(
                    PUSH_SUBSCRIPTION,
                    {
                        "endpoint": "https://push.example.com/send/abc",
                        "expirationTime": None,
                        "keys": {
                            "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg"
                            "7A8u-"
                            "Ts1XbjhazAkj7I99e8QcYP7DkM",
                            "auth": "tBHItJI5svbpez7KI4CCXg",
                        },
                    },
                ),
            )
        },
        "/push/unsubscribe": {
            "post": _op(
                "Forget one of the visitor's push subscriptions",
                "Push",
                {"200": OK, "400": ERROR, "413": ERROR},
                session=True,
                body=_json(
                    {
                        "type": "object",
                        "required": ["endpoint"],
                        "additionalProperties": False,
                        "properties": {"endpoint": {"type": "string"}},
                    },
                    {"endpoint": "https://push.example.com/send/abc"},
                ),
            )
        },
        "/sw.js": {
            "get": _op(
                "The service worker for web push",
                "Push",
                {"200": {"description": "JavaScript", "content": {"text/javascript": {}}}},
            )
        },
        "/inbox": {
            "get": _op(
                "The visitor's in-app messages, newest first",
                "Inbox",
                {
                    "200": {
                        "description": "Messages",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "messages": {"type": "array"},
                                        "unread": {"type": "integer"},
                                    },
                                }
                            }
                        },
                    }
                },
                session=True,
                parameters=[
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                    }
                ],
            )
        },
        "/inbox/{message_id}/read": {
            "post": _op(
                "Mark an in-app message read",
                "Inbox",
                {"200": OK, "404": ERROR},
                session=True,
                parameters=[
                    {
                        "name": "message_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 0},
                    }
                ],
            )
        },
        "/openapi.json": {"get": _op("This document", "Meta", {"200": OK})},
        "/v1/users/{uid}": {
            "put": _op(
                "Engage.so v1: create or update a user (standard fields + meta)",
                "Engage v1",
                {
                    "200": {
                        "description": "The customer",
                        "content": {"application/json": {"schema": CUSTOMER}},
                    },
                    **limits,
                },
                keys=True,
                parameters=[UID],
                body={
                    **_json(
                        V1_USER,
                        {
                            "email": "dan@mail.app",
                            "first_name": "Dan",
                            "created_at": "2020-05-30T09:30:10Z",
                            "meta": {"plan": "Premium"},
                        },
                    ),
                    "required": False,
                },
            )
        },
        "/v1/users/{uid}/events": {
            "post": _op(
                "Engage.so v1: record an event",
                "Engage v1",
                {"200": OK, **limits},
                keys=True,
                parameters=[UID],
                body=_json(
                    {
                        "type": "object",
                        "required": ["event"],
                        "additionalProperties": False,
                        "properties": {
                            "event": TRACK["properties"]["event"],
                            "value": {"type": ["string", "number", "boolean"]},
                            "properties": ATTRIBUTES,
                            "timestamp": TIME,
                        },
                    },
                    {"event": "New badge", "value": "gold", "timestamp": "2020-05-30T09:30:10Z"},
                ),
            )
        },
        "/v1/users/merge": {
            "post": _op(
                "Engage.so v1: merge source into destination (source removed)",
                "Engage v1",
                {
                    "200": {
                        "description": "The destination",
                        "content": {"application/json": {"schema": CUSTOMER}},
                    },
                    "404": ERROR,
                    **limits,
                },
                keys=True,
                body=_json(
                    {
                        "type": "object",
                        "required": ["source", "destination"],
                        "additionalProperties": False,
                        "properties": {
                            "source": {"type": ["string", "integer"]},
                            "destination": {"type": ["string", "integer"]},
                        },
                    },
                    {"source": "anon-123", "destination": "42"},
                ),
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "flask-engage",
            "version": VERSION,
            "description": "Customer data in, web push, in-app inbox, unsubscribe links "
            "and an Engage.so-compatible v1 user API.",
        },
        "servers": [{"url": server}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A key of ENGAGE_API_KEYS (or key:secret)",
                },
                "basic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "username=key, password=secret of a key:secret entry",
                },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {"type": "string", "description": "Names the bad field first"},
                        "field": {"type": "string"},
                    },
                }
            },
            "responses": {
                "Error": {
                    "description": "Bad request; the error names the field",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
                "Unauthorized": {
                    "description": "Missing or unknown credentials",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            },
        },
    }


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3.1 description of this blueprint."""
    server = request.url_root.rstrip("/") + current_app.config["ENGAGE_URL_PREFIX"]
    return jsonify(build_spec(server))
