"""Unsubscribe links: GET shows a confirmation page, POST is RFC 8058 one-click."""

from __future__ import annotations

from flask import render_template, request
from flask.typing import ResponseReturnValue

from ..db import operation_session
from ..errors import NotFound, ValidationError
from ..messages.unsubscribe import resolve_token, set_subscription
from .common import bp
from .openapi import HTML, documented

INVALID = {"description": "Bad or tampered token, or a customer who is gone (HTML page)"}


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
        with operation_session() as session:
            target = resolve_token(session, token)
    except (ValidationError, NotFound):
        return render_template("engage/unsubscribe.html", state="invalid"), 400
    channel = target.channel
    if target.customer is None:  # a test send: nobody to unsubscribe
        return render_template("engage/unsubscribe.html", state="test", channel=channel)
    if request.method == "GET":
        return render_template(
            "engage/unsubscribe.html", state="confirm", channel=channel, token=token
        )
    resubscribe = request.form.get("action") == "resubscribe"
    try:
        set_subscription(target.customer.id, channel, subscribed=resubscribe, internal=True)
    except NotFound:  # merged or removed since the token was read
        return render_template("engage/unsubscribe.html", state="invalid"), 400
    state = "resubscribed" if resubscribe else "done"
    return render_template("engage/unsubscribe.html", state=state, channel=channel, token=token)
