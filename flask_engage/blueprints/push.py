"""Web push: the public VAPID key, subscribe/unsubscribe, and the service worker.

A subscription's endpoint is a URL Engage will POST to, so it must be an https
URL of a public host (:mod:`flask_engage.addresses`), and it belongs to the
customer who registered it first: another visitor registering the same endpoint
gets 409 until its owner unsubscribes it.
"""

from __future__ import annotations

from typing import cast

from flask import jsonify, send_from_directory
from flask.typing import ResponseReturnValue
from sqlalchemy import CursorResult, delete, select, update

from ..changes import Changes, note
from ..channels.webpush import vapid_keys
from ..db import insert_ignoring_conflicts, operation_session
from ..errors import ConfigurationError
from ..models import Customer, PushSubscription, utcnow
from ..outbox import add_evaluations, add_to_outbox
from ..tracking import CustomerPatch, write_customers
from .common import ApiError, bp, json_body, visitor
from .limits import limit_visitor
from .openapi import ERROR, OK, documented, json_answer
from .schemas import PUSH_ENDPOINT, PUSH_SUBSCRIPTION


@bp.get("/push/key")
@documented(
    "The VAPID public key",
    "Push",
    {
        "200": json_answer(
            "Key", {"type": "object", "properties": {"publicKey": {"type": "string"}}}
        ),
        "404": ERROR,
    },
)
def push_key() -> ResponseReturnValue:
    try:
        _, public, _ = vapid_keys()
    except ConfigurationError as exc:
        raise ApiError(404, str(exc)) from None
    return jsonify({"publicKey": public})


@bp.post("/push/subscribe")
@documented(
    "Save the visitor's PushSubscription (409: the endpoint belongs to another customer)",
    "Push",
    {"201": OK, "409": ERROR},
    body=PUSH_SUBSCRIPTION,
    auth="session",
    limited=True,
)
def push_subscribe() -> ResponseReturnValue:
    customer_id = visitor()
    limit_visitor(customer_id)
    data = PUSH_SUBSCRIPTION.parse(json_body())
    endpoint, keys = data["endpoint"], data["keys"]
    table = PushSubscription.__table__
    with operation_session() as session:
        written = write_customers(session.connection(), {customer_id: CustomerPatch()})
        mine = written[customer_id]
        session.execute(
            insert_ignoring_conflicts(session, table, ["endpoint"]).values(
                customer_id=mine, endpoint=endpoint, created_at=utcnow(), **keys
            )
        )
        owner = session.scalar(
            select(PushSubscription.customer_id).where(PushSubscription.endpoint == endpoint)
        )
        if owner != mine:  # raising rolls back the customer written above
            raise ApiError(409, "endpoint: registered by another customer", "endpoint")
        session.execute(
            update(PushSubscription).where(PushSubscription.endpoint == endpoint).values(**keys)
        )
        changed = dict(written.changed)
        note(changed, [mine], Changes(channels=True))
        add_evaluations(session, changed)
    return jsonify({"ok": True}), 201


@bp.post("/push/unsubscribe")
@documented(
    "Forget one of the visitor's push subscriptions",
    "Push",
    body=PUSH_ENDPOINT,
    auth="session",
    limited=True,
)
def push_unsubscribe() -> ResponseReturnValue:
    customer_id = visitor()
    limit_visitor(customer_id)
    endpoint = PUSH_ENDPOINT.parse(json_body())["endpoint"]
    with operation_session() as session:
        customer = session.scalar(select(Customer).where(Customer.external_id == customer_id))
        removed = 0
        if customer is not None:
            result = session.execute(
                delete(PushSubscription).where(
                    PushSubscription.endpoint == endpoint,
                    PushSubscription.customer_id == customer.id,
                )
            )
            removed = cast(CursorResult, result).rowcount
            if removed:
                add_to_outbox(session, "evaluate", [customer.id], changes=Changes(channels=True))
    return jsonify({"ok": True, "removed": removed})


@bp.get("/sw.js")
@documented(
    "The service worker for web push",
    "Push",
    {"200": {"description": "JavaScript", "content": {"text/javascript": {}}}},
)
def service_worker() -> ResponseReturnValue:
    assert bp.static_folder is not None
    response = send_from_directory(bp.static_folder, "sw.js", mimetype="text/javascript")
    response.headers["Service-Worker-Allowed"] = "/"
    response.headers["Cache-Control"] = "no-cache"
    return response
