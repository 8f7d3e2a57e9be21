"""Unsubscribe links: GET shows a confirmation page, POST is RFC 8058 one-click."""

from __future__ import annotations

from flask import render_template, request
from flask.typing import ResponseReturnValue

from ..db import operation_session
from ..errors import NotFound, ValidationError
from ..messages.unsubscribe import read_token, set_subscription
from ..models import Customer
from .common import bp
from .openapi import HTML, documented

INVALID = {"description": "Bad or tampered token (HTML page)"}


@bp.route("/unsubscribe/<token>", methods=["GET", "POST"])
@documented(
    "Confirmation page of an unsubscribe link",
    "Unsubscribe",
    {"200": HTML, "400": INVALID},
    methods=["GET"],
)
@documented(
    "RFC 8058 one-click unsubscribe (form action=resubscribe undoes it)",
    "Unsubscribe",
    {"200": HTML, "400": INVALID},
    methods=["POST"],
)
def unsubscribe(token: str) -> ResponseReturnValue:
    try:
        customer_id, channel = read_token(token)
    except ValidationError:
        return render_template("engage/unsubscribe.html", state="invalid"), 400
    with operation_session() as session:
        customer = session.get(Customer, customer_id)
    if customer is None:
        return render_template("engage/unsubscribe.html", state="invalid"), 400
    if request.method == "GET":
        return render_template(
            "engage/unsubscribe.html", state="confirm", channel=channel, token=token
        )
    resubscribe = request.form.get("action") == "resubscribe"
    try:
        set_subscription(customer_id, channel, subscribed=resubscribe, internal=True)
    except NotFound:
        return render_template("engage/unsubscribe.html", state="invalid"), 400
    state = "resubscribed" if resubscribe else "done"
    return render_template("engage/unsubscribe.html", state=state, channel=channel, token=token)
