"""What every Engage admin view shares: access, CSRF, request limits, and answers.

Before any view runs, :class:`EngageViewMixin` checks ``ENGAGE_ADMIN_ACCESS``
(refused visitors: :func:`~.security.refuse`), caps the request body at
``ENGAGE_MAX_BODY`` (413) and checks the session's CSRF token on every POST (400).
Errors a view lets through are answered on the view's blueprint: JSON for the
AJAX endpoints, a page otherwise, with a 4xx status.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from flask import Blueprint, abort, current_app, flash, jsonify, redirect, request, url_for
from flask_admin import BaseView
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.wrappers import Response

from ..blueprints.common import ApiError
from ..db import host_session
from ..errors import EngageError, NotFound
from .security import csrf_valid, is_allowed, refuse, wants_json
from .words import explain, plain

#: Largest request body the admin reads (its live count may carry a filter with long
#: lists); ``ENGAGE_MAX_BODY`` raises it.
MAX_BODY = 4 * 1024 * 1024
#: Deepest JSON the admin accepts (filters are at most 20 conditions deep).
MAX_JSON_DEPTH = 64

#: Path converters for ids: beyond these the id cannot exist, so the page is a 404.
SMALL_ID = "int(max=2147483647)"
BIG_ID = "int(max=9223372036854775807)"


Row = TypeVar("Row")


def found_or_404(model: type[Row], ident: int) -> Row:
    """The row of ``model`` with this id (in the host's session), else a 404 page."""
    found = host_session().get(model, ident)
    if found is None:
        abort(404)
    return found


def engage() -> Any:
    """The app's :class:`~flask_engage.Engage`."""
    return current_app.extensions["engage"]


def body_limit() -> int:
    """The largest request body the admin reads: :data:`MAX_BODY`, or
    ``ENGAGE_MAX_BODY`` when that is larger."""
    return max(int(current_app.config["ENGAGE_MAX_BODY"]), MAX_BODY)


def payload(field: str = "body") -> dict[str, Any]:
    """The JSON object of an AJAX request (400 naming ``field`` when it is not one,
    413 past :func:`body_limit`); nesting deeper than :data:`MAX_JSON_DEPTH` is refused."""
    if request.mimetype != "application/json":
        raise ApiError(400, f"{field}: send JSON (Content-Type: application/json)", field)
    try:
        data = json.loads(request.get_data(cache=True) or b"null", parse_constant=_no_constant)
    except RecursionError:
        raise ApiError(400, f"{field}: the JSON is nested too deeply", field) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"{field}: not valid JSON ({exc})", field) from None
    if not isinstance(data, dict):
        raise ApiError(400, f"{field}: send a JSON object", field)
    check_depth(data, field)
    return data


def check_depth(data: Any, field: str) -> None:
    """Refuse JSON nested deeper than :data:`MAX_JSON_DEPTH`, and text with NUL
    characters (no database stores them); walked without recursion."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ApiError(400, f"{field}: the JSON is nested too deeply", field)
        if isinstance(node, str) and "\x00" in node:
            raise ApiError(400, f"{field}: text must not contain NUL characters", field)
        if isinstance(node, dict):
            if any("\x00" in key for key in node):
                raise ApiError(400, f"{field}: text must not contain NUL characters", field)
            stack.extend((value, depth + 1) for value in node.values())
        elif isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_error(status: int, message: str, field: str | None = None) -> Response:
    """``{"error", "plain", "field"}`` with ``status``."""
    body: dict[str, Any] = {"error": message, "plain": plain(message)}
    if field:
        body["field"] = field
    response = jsonify(body)
    response.status_code = status
    return response


class EngageViewMixin:
    """Access control, limits, CSRF and error answers for every Engage admin view."""

    endpoint: str

    def is_accessible(self) -> bool:
        return is_allowed()

    def inaccessible_callback(self, name: Any, **kwargs: Any) -> Any:
        return refuse()

    def _handle_view(self, name: str, **kwargs: Any) -> Any:
        if not self.is_accessible():
            return self.inaccessible_callback(name, **kwargs)
        limit = body_limit()
        if request.content_length is not None and request.content_length > limit:
            raise RequestEntityTooLarge(f"body: larger than {limit} bytes")
        request.max_content_length = limit
        for values in (request.args, request.form):
            for key, value in values.items(multi=True):
                if "\x00" in key or "\x00" in value:
                    raise ApiError(400, f"{key[:40]}: text must not contain NUL characters", key)
        if request.method == "POST" and not csrf_valid():
            message = "csrf_token: missing or invalid CSRF token; reload the page and try again"
            if wants_json() or not request.form:
                return json_error(400, message, "csrf_token")
            return self.page_error(message, 400)
        # Operations commit in sessions of their own: read their results fresh.
        host_session().expire_all()
        return None

    def create_blueprint(self, admin: Any) -> Blueprint:
        blueprint: Blueprint = super().create_blueprint(admin)  # type: ignore[misc]
        blueprint.register_error_handler(ApiError, self._api_error)
        blueprint.register_error_handler(NotFound, self._not_found)
        blueprint.register_error_handler(EngageError, self._engage_error)
        blueprint.register_error_handler(HTTPException, self._http_error)
        return blueprint

    # -- answers -------------------------------------------------------------------------
    def page_error(self, message: Any, status: int) -> Any:
        """The error page (``message`` in plain words, with the original as a detail)."""
        view: Any = self
        return view.render("engage_admin/error.html", message=explain(message)), status

    def _api_error(self, exc: ApiError) -> Any:
        if wants_json():
            return json_error(exc.status, exc.message, exc.field)
        return self.page_error(exc.message, exc.status)

    def _not_found(self, exc: NotFound) -> Any:
        if wants_json():
            return json_error(404, str(exc))
        return self.page_error(str(exc), 404)

    def _engage_error(self, exc: EngageError) -> Any:
        if wants_json():
            return json_error(400, str(exc), getattr(exc, "field", None))
        return self.page_error(str(exc), 400)

    def _http_error(self, exc: HTTPException) -> Any:
        status = exc.code or 500
        if status >= 500:
            return exc
        if wants_json():
            return json_error(status, exc.description or exc.name)
        return exc

    def back(self, endpoint: str, **values: Any) -> Any:
        """Redirect to another page of this view."""
        return redirect(url_for(f"{self.endpoint}.{endpoint}", **values))

    def failed(self, exc: Exception, endpoint: str, **values: Any) -> Any:
        """Show an error on the page the admin came from (JSON for AJAX, which then
        shows that page)."""
        flash(explain(exc), "error")
        if wants_json():
            return json_error(400, str(exc), getattr(exc, "field", None))
        return self.back(endpoint, **values)


class EngageView(EngageViewMixin, BaseView):
    """A page of Engage's admin."""
