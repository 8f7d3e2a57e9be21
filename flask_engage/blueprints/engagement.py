"""Engagement endpoints: the email open pixel, click redirects, push click reports.

Each takes a signed token (:mod:`flask_engage.messages.links`). A forged, altered
or malformed token answers 400 and redirects nowhere: only a link Engage signed
leads anywhere. A valid one is recorded (``Email opened``, ``Email clicked``,
``Push clicked``) and committed before the answer, which goes out even when
recording fails (the failure is logged): a customer who clicks reaches the page.
What the hit sets off (segment evaluation, automations it triggers, their sends)
is handed on once the response has been sent: queued for a worker, or in inline
mode run then, so the visitor never waits for it.
"""

from __future__ import annotations

import base64

from flask import Response, after_this_request, redirect, request
from flask.typing import ResponseReturnValue

from ..db import PENDING, PendingWork, get_state, log, operation_session, this_app
from ..messages.engagement import CLICKED, OPENED, record
from ..messages.links import CLICK, OPEN, PUSH, read_token
from .common import bp
from .openapi import ERROR, OK, documented

#: A transparent 1x1 GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
GIF = {"description": "A transparent 1x1 GIF", "content": {"image/gif": {}}}
REDIRECT = {"description": "Redirect to the link's destination (Location)"}
NO_STORE = "no-store, no-cache, must-revalidate, private"
#: How the hits of each endpoint come (``Channel.tracking``).
LINKS, REPORT = "links", "report"


def _record(kind: str, message_id: int, via: str, url: str | None = None) -> None:
    """Record a hit; a failure is logged and the visitor still gets the answer."""
    work: PendingWork | None = None
    try:
        with operation_session() as session:
            record(
                session,
                kind,
                message_id,
                url=url,
                user_agent=request.headers.get("User-Agent"),
                method=request.method,
                via=via,
            )
            work = session.info.pop(PENDING, None)  # handed on after the response
    except Exception:
        log.exception("flask-engage: could not record %s of message %s", kind, message_id)
        return
    if work:
        _after_response(work)


def _after_response(work: PendingWork) -> None:
    """Run what a committed hit left (as any commit would) once the response is sent."""
    app, state = this_app(), get_state()
    if state.after_commit is None:
        return
    after_commit = state.after_commit

    @after_this_request
    def hand_on(response: Response) -> Response:
        response.call_on_close(lambda: after_commit(app, work))
        return response


@bp.get("/open/<token>")
@documented(
    "Open pixel of an email: records Email opened, answers a 1x1 GIF",
    "Engagement",
    {"200": GIF, "400": ERROR},
)
def email_open(token: str) -> ResponseReturnValue:
    message_id, _ = read_token(OPEN, token)
    _record(OPENED, message_id, LINKS)
    response = Response(PIXEL, mimetype="image/gif")
    response.headers["Cache-Control"] = NO_STORE
    return response


@bp.get("/click/<token>")
@documented(
    "A tracked email link: records Email clicked, redirects to the original URL",
    "Engagement",
    {"302": REDIRECT, "400": ERROR},
)
def email_click(token: str) -> ResponseReturnValue:
    message_id, url = read_token(CLICK, token)
    assert url is not None
    _record(CLICKED, message_id, LINKS, url)
    response = redirect(url, 302)
    response.headers["Cache-Control"] = NO_STORE
    return response


@bp.post("/push/clicked/<token>")
@documented(
    "A push notification was clicked (the service worker reports it): records Push clicked",
    "Engagement",
    {"200": OK, "400": ERROR},
)
def push_clicked(token: str) -> ResponseReturnValue:
    message_id, _ = read_token(PUSH, token)
    _record(CLICKED, message_id, REPORT)
    return {"ok": True}
