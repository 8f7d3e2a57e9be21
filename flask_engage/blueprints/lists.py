"""Public list pages: the subscribe form and its JSON twin, double opt-in confirmation,
and the per-list unsubscribe link.

Only lists marked ``public`` have these pages (others answer 404, as an unknown slug
does). Subscribing is limited per client address (``ENGAGE_BROWSER_RATE_LIMIT``):
behind a proxy, give Flask the client's address (``ProxyFix``). A double opt-in
list's answer never says whether the address was already subscribed.
"""

from __future__ import annotations

from typing import Any

from flask import redirect, render_template, request
from flask.typing import ResponseReturnValue

from ..db import operation_session
from ..errors import StateError, ValidationError
from ..lists.optin import confirm, leave, read_confirm_token, read_unsubscribe_token, signup
from ..lists.service import public_list
from ..models import CustomerList, ListMemberStatus
from ..tracking import check_email
from ..values import normalize_value
from .common import ApiError, bp, json_body
from .limits import limit_visitor
from .openapi import HTML, documented, json_answer
from .schemas import EMAIL, Body, Field

NOT_FOUND = {"description": "No public list with this slug (HTML page)"}
INVALID = {"description": "Bad, tampered or expired token (HTML page)"}
#: Longest name accepted from the public form.
MAX_NAME = 200


def _name(value: Any, path: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_NAME:
        raise ValidationError(f"{path}: expected text of at most {MAX_NAME} characters", field=path)
    return normalize_value(value.strip(), path) or None


def _email(value: Any, path: str) -> str:
    address = check_email(value, path)
    if not address:
        raise ValidationError(f"{path}: an email address is required", field=path)
    return address


NAME = Field({"type": ["string", "null"], "maxLength": MAX_NAME}, _name)
SIGNUP = Body(
    {
        "email": Field(EMAIL.schema, _email, required=True),
        "first_name": NAME,
        "last_name": NAME,
    },
    example={"email": "ada@example.com", "first_name": "Ada"},
    description="first_name and last_name are given to a new customer only",
)
SIGNED_UP = json_answer(
    "subscribed, or pending (double opt-in: a confirmation email is on its way, "
    "also when the address was already subscribed)",
    {
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "status": {"enum": [ListMemberStatus.SUBSCRIBED, ListMemberStatus.PENDING]},
        },
    },
)


def _page(state: str, found: CustomerList | None = None, status: int = 200, **extra: Any):
    return render_template("engage/list_page.html", state=state, list=found, **extra), status


def _public(slug: str) -> CustomerList | None:
    with operation_session() as session:
        return public_list(session, slug)


NO_LIST = "There is no such list."


def _subscribe(slug: str, data: dict[str, Any]) -> tuple[CustomerList, str]:
    """Sign the address up; the status shown (a double opt-in list always says pending)."""
    attributes = {name: data[name] for name in ("first_name", "last_name") if data.get(name)}
    with operation_session() as session:
        found = public_list(session, slug)
        if found is None:
            raise ApiError(404, f"list: no public list {slug!r}", "list")
        signup(session, found, data["email"], attributes)
    shown = ListMemberStatus.PENDING if found.double_optin else ListMemberStatus.SUBSCRIBED
    return found, shown


@bp.route("/lists/<slug>/subscribe", methods=["GET", "POST"])
@documented(
    "A public list's subscribe page", "Lists", {"200": HTML, "404": NOT_FOUND}, methods=["GET"]
)
@documented(
    "Subscribe to a public list: JSON in, JSON out; a form post (email, first_name, "
    "last_name) gets the page, or a redirect to the list's redirect_url",
    "Lists",
    {"200": SIGNED_UP, "303": {"description": "To the list's redirect_url (form posts)"}},
    body=SIGNUP,
    limited=True,
    methods=["POST"],
)
def list_subscribe(slug: str) -> ResponseReturnValue:
    """The form (GET); a sign-up (POST), as JSON or as a form post."""
    if request.method == "POST":
        limit_visitor(f"address:{request.remote_addr}")
        if request.mimetype == "application/json":
            _, shown = _subscribe(slug, SIGNUP.parse(json_body()))
            return {"ok": True, "status": shown}
    found = _public(slug)
    if found is None:
        return _page("invalid", status=404, error=NO_LIST)
    if found.archived_at is not None:
        return _page("closed", found, 200 if request.method == "GET" else 400)
    if request.method == "GET":
        return _page("form", found)
    form = {key: request.form.get(key) for key in SIGNUP.fields if key in request.form}
    try:
        found, shown = _subscribe(slug, SIGNUP.parse(form))
    except ValidationError as exc:
        return _page("form", found, 400, error=str(exc), **form)
    if shown == ListMemberStatus.SUBSCRIBED and found.redirect_url:
        return redirect(found.redirect_url, 303)
    return _page(shown, found)


def _invalid(exc: Exception, field: str) -> ResponseReturnValue:
    """The "invalid link" page with the error, without its field prefix."""
    return _page("invalid", status=400, error=str(exc).removeprefix(f"{field}: "))


@bp.route("/lists/<slug>/confirm/<token>", methods=["GET", "POST"])
@documented(
    "A double opt-in confirmation link: a page with a Confirm button (link scanners "
    "that open it confirm nothing)",
    "Lists",
    {"200": HTML, "400": INVALID},
    methods=["GET"],
)
@documented(
    "Confirm a subscription; redirects to the list's redirect_url when it has one",
    "Lists",
    {"200": HTML, "303": {"description": "To the list's redirect_url"}, "400": INVALID},
    methods=["POST"],
)
def list_confirm(slug: str, token: str) -> ResponseReturnValue:
    """Show (GET) or carry out (POST) a confirmation."""
    try:
        _, list_id = read_confirm_token(token)
    except ValidationError as exc:
        return _invalid(exc, "token")
    if request.method == "GET":
        with operation_session() as session:
            found = session.get(CustomerList, list_id)
        return _page("confirm", found) if found else _page("invalid", status=400)
    try:
        with operation_session() as session:
            found = confirm(session, token)
    except ValidationError as exc:
        return _invalid(exc, "token")
    except StateError as exc:
        return _invalid(exc, "list")
    if found.redirect_url:
        return redirect(found.redirect_url, 303)
    return _page("subscribed", found)


@bp.route("/lists/<slug>/unsubscribe/<token>", methods=["GET", "POST"])
@documented(
    "A list unsubscribe link: a page with an Unsubscribe button",
    "Lists",
    {"200": HTML, "400": INVALID},
    methods=["GET"],
)
@documented(
    "Leave one list (channel subscriptions stay); one-click like RFC 8058",
    "Lists",
    {"200": HTML, "400": INVALID},
    methods=["POST"],
)
def list_unsubscribe(slug: str, token: str) -> ResponseReturnValue:
    """Show (GET) or carry out (POST) leaving one list."""
    try:
        list_id, _ = read_unsubscribe_token(token)
    except ValidationError as exc:
        return _invalid(exc, "token")
    if request.method == "GET":
        with operation_session() as session:
            found = session.get(CustomerList, list_id)
        return _page("leave", found) if found else _page("gone")
    with operation_session() as session:
        found = leave(session, token)
    return _page("left", found) if found else _page("gone")
