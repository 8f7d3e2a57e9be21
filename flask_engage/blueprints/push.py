"""Web push: the public VAPID key, subscribe/unsubscribe, and the service worker."""

from __future__ import annotations

from urllib.parse import urlparse

from flask import current_app, jsonify, send_from_directory
from sqlalchemy import delete, select

from ..channels.webpush import vapid_keys
from ..db import operation_session
from ..errors import ConfigurationError
from ..models import Customer, PushSubscription
from ..outbox import add_to_outbox
from ..tracking import CustomerPatch, write_customers
from .common import ApiError, bp, json_body, only_fields


def _identity() -> str:
    customer_id = current_app.extensions["engage"].current_identity()
    if customer_id is None:
        raise ApiError(401, "identity: no signed-in customer")
    return customer_id


LOCAL_HOSTS = ("localhost", "127.0.0.1")


def _check_endpoint(endpoint: object) -> str:
    """The push service's URL: https, or http on this machine (development and tests)."""
    parsed = urlparse(endpoint) if isinstance(endpoint, str) else None
    if (
        parsed is None
        or len(endpoint) > 2048
        or not parsed.netloc
        or not (
            parsed.scheme == "https" or (parsed.scheme == "http" and parsed.hostname in LOCAL_HOSTS)
        )
    ):
        raise ApiError(400, "endpoint: expected the push service's https URL", "endpoint")
    return endpoint


def _subscription(data: dict) -> tuple[str, str, str]:
    only_fields(data, {"endpoint", "keys", "expirationTime"})
    endpoint = _check_endpoint(data.get("endpoint"))
    keys = data.get("keys")
    if not isinstance(keys, dict):
        raise ApiError(400, "keys: expected {p256dh, auth}", "keys")
    only_fields(keys, {"p256dh", "auth"}, "keys.")
    for name in ("p256dh", "auth"):
        value = keys.get(name)
        if not isinstance(value, str) or not value or len(value) > 255:
            raise ApiError(400, f"keys.{name}: expected a base64url string", f"keys.{name}")
    return endpoint, keys["p256dh"], keys["auth"]


@bp.get("/push/key")
def push_key():
    try:
        _, public, _ = vapid_keys()
    except ConfigurationError as exc:
        raise ApiError(404, str(exc)) from None
    return jsonify({"publicKey": public})


@bp.post("/push/subscribe")
def push_subscribe():
    customer_id = _identity()
    endpoint, p256dh, auth = _subscription(json_body())
    with operation_session() as session:
        ids = write_customers(session.connection(), {customer_id: CustomerPatch()})
        session.execute(delete(PushSubscription).where(PushSubscription.endpoint == endpoint))
        session.add(
            PushSubscription(
                customer_id=ids[customer_id], endpoint=endpoint, p256dh=p256dh, auth=auth
            )
        )
        add_to_outbox(session, "evaluate", ids.values())
    return jsonify({"ok": True}), 201


@bp.post("/push/unsubscribe")
def push_unsubscribe():
    customer_id = _identity()
    data = json_body()
    only_fields(data, {"endpoint"})
    if not isinstance(data.get("endpoint"), str):
        raise ApiError(400, "endpoint: required", "endpoint")
    with operation_session() as session:
        customer = session.scalar(select(Customer).where(Customer.external_id == customer_id))
        removed = 0
        if customer is not None:
            removed = session.execute(
                delete(PushSubscription).where(
                    PushSubscription.endpoint == data["endpoint"],
                    PushSubscription.customer_id == customer.id,
                )
            ).rowcount
            if removed:
                add_to_outbox(session, "evaluate", [customer.id])
    return jsonify({"ok": True, "removed": removed})


@bp.get("/sw.js")
def service_worker():
    response = send_from_directory(bp.static_folder, "sw.js", mimetype="text/javascript")
    response.headers["Service-Worker-Allowed"] = "/"
    response.headers["Cache-Control"] = "no-cache"
    return response
