"""Shared pieces of the HTTP layer: the blueprint, JSON errors, body parsing, auth."""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from ..errors import EngageError, NotFound, ValidationError

#: Deepest nesting of objects and lists accepted in a body.
MAX_DEPTH = 32

bp = Blueprint(
    "engage",
    __name__,
    static_folder="static",
    static_url_path="/static",
    template_folder="templates",
)


class ApiError(Exception):
    """An HTTP error answered as ``{"error": message, "field": field}`` with its status.

    (A :class:`~flask_engage.errors.ValidationError` is answered the same way, as 400.)
    """

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field
        self.headers = headers or {}


def error_response(status: int, message: str, field: str | None = None) -> Response:
    """A JSON error answer; the message starts with the field or topic it is about."""
    body: dict[str, Any] = {"error": message}
    if field:
        body["field"] = field
    response = jsonify(body)
    response.status_code = status
    return response


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> Response:
    response = error_response(exc.status, exc.message, exc.field)
    response.headers.update(exc.headers)
    return response


@bp.errorhandler(ValidationError)
def _validation_error(exc: ValidationError) -> Response:
    return error_response(400, str(exc), exc.field)


@bp.errorhandler(NotFound)
def _not_found(exc: NotFound) -> Response:
    return error_response(404, str(exc))


@bp.errorhandler(EngageError)
def _engage_error(exc: EngageError) -> Response:
    return error_response(400, str(exc))


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    return error_response(exc.code or 500, exc.description or exc.name)


def json_body() -> dict[str, Any]:
    """The request's JSON object, size-checked; ApiError(400/413) otherwise."""
    limit = current_app.config["ENGAGE_MAX_BODY"]
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"body: larger than {limit} bytes")
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise ApiError(413, f"body: larger than {limit} bytes")
    if not request.mimetype or request.mimetype != "application/json":
        raise ApiError(400, "body: expected Content-Type: application/json", "body")
    try:
        data = json.loads(raw or b"null", parse_constant=_no_constant)
    except RecursionError:
        raise ApiError(400, "body: JSON is nested too deeply", "body") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"body: invalid JSON ({exc})", "body") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body: expected a JSON object", "body")
    check_json_tree(data)
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def check_text(value: str, field: str) -> None:
    """Reject text no database stores verbatim: NUL characters and lone surrogates."""
    if "\x00" in value:
        raise ApiError(400, f"{field}: text must not contain NUL characters", field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"{field}: text is not valid Unicode", field) from None


def check_json_tree(data: Any) -> None:
    """Walk a parsed body (iteratively) and check every key and string in it."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ApiError(400, f"{path or 'body'}: JSON is nested too deeply", path or "body")
        if isinstance(node, str):
            check_text(node, path or "body")
        elif isinstance(node, dict):
            for key, value in node.items():
                child = f"{path}.{key}" if path else key
                check_text(key, path or "body")
                stack.append((value, child, depth + 1))
        elif isinstance(node, list):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(node))


def visitor() -> str:
    """The signed-in visitor's customer id (``ENGAGE_IDENTITY`` or Flask-Login); 401 without."""
    customer_id = current_app.extensions["engage"].current_identity()
    if customer_id is None:
        raise ApiError(401, "identity: no signed-in customer")
    return str(customer_id)


def configured_keys() -> list[tuple[str, str | None]]:
    """``ENGAGE_API_KEYS`` as (key, secret or None) pairs."""
    keys = current_app.config["ENGAGE_API_KEYS"]
    if isinstance(keys, str):
        keys = [keys]
    pairs = []
    for entry in keys:
        key, _, secret = str(entry).partition(":")
        pairs.append((key, secret or None))
    return pairs


def check_bearer(token: str) -> bool:
    """Constant-time check of a bearer token against every configured key."""
    found = False
    for key, secret in configured_keys():
        expected = f"{key}:{secret}" if secret else key
        found |= hmac.compare_digest(token.encode(), expected.encode())
    return found


def check_basic(username: str, password: str) -> bool:
    """Constant-time check of HTTP Basic key:secret."""
    found = False
    for key, secret in configured_keys():
        if secret is None:
            continue
        found |= hmac.compare_digest(f"{username}:{password}".encode(), f"{key}:{secret}".encode())
    return found


def require_api_key(view: Callable[..., Any]) -> Callable[..., Any]:
    """401 unless the request carries a configured key (Bearer, or Basic key:secret)."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        ok = False
        if scheme.lower() == "bearer" and value:
            ok = check_bearer(value.strip())
        elif scheme.lower() == "basic" and request.authorization is not None:
            auth = request.authorization
            ok = check_basic(auth.username or "", auth.password or "")
        if not ok:
            response = error_response(401, "authorization: missing or unknown API key")
            response.headers["WWW-Authenticate"] = 'Bearer realm="engage"'
            return response
        return view(*args, **kwargs)

    return wrapped
