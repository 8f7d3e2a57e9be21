"""The OpenAPI 3.1 document at ``<prefix>/openapi.json``, built from the routes themselves.

Each route of the blueprint is decorated with :func:`documented` (a summary, its
request :class:`~.schemas.Body`, its answers). The document walks the app's URL
map, so a path, its methods and its path parameters come from the route, and a
request body's schema and example from the same :class:`~.schemas.Body` that
checks it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from flask import current_app, jsonify, request
from flask.typing import ResponseReturnValue

from ..config import VERSION
from .common import bp
from .schemas import Body

View = TypeVar("View", bound=Callable[..., Any])

ERROR = {"$ref": "#/components/responses/Error"}
OK = {"description": "Done", "content": {"application/json": {"schema": {"type": "object"}}}}
HTML = {"description": "HTML page", "content": {"text/html": {}}}
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
SESSION_NOTE = (
    "For the host's own pages: the customer is the signed-in visitor "
    "(ENGAGE_IDENTITY or Flask-Login); no visitor gets 401."
)
LIMIT_NOTE = (
    " At most ENGAGE_BROWSER_RATE_LIMIT requests per visitor (429 with Retry-After beyond)."
)
#: Path converters -> parameter schemas (others are strings).
CONVERTERS = {"int": {"type": "integer", "minimum": 0}}
_VARIABLE = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")


def json_answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A response whose body is JSON of ``schema``."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


@dataclass(frozen=True)
class Operation:
    """What the document says about one method of one route."""

    summary: str
    tag: str
    responses: dict[str, Any]
    #: The request body, or several (``oneOf``); the first one's example is shown.
    body: Body | Sequence[Body] | None = None
    body_required: bool = True
    #: ``"keys"``: API keys (Bearer or Basic); ``"session"``: the signed-in visitor.
    auth: Literal["keys", "session"] | None = None
    #: Answers 429 beyond ``ENGAGE_BROWSER_RATE_LIMIT``.
    limited: bool = False
    #: Query parameters (path parameters come from the route).
    query: Sequence[dict[str, Any]] = ()
    #: Methods this applies to; ``None``: every method of the route.
    methods: frozenset[str] | None = None

    def render(self) -> dict[str, Any]:
        responses = dict(self.responses)
        operation: dict[str, Any] = {"summary": self.summary, "tags": [self.tag]}
        if self.body is not None:
            bodies = [self.body] if isinstance(self.body, Body) else list(self.body)
            schemas = [body.json_schema() for body in bodies]
            operation["requestBody"] = {
                "required": self.body_required,
                "content": {
                    "application/json": {
                        "schema": schemas[0] if len(schemas) == 1 else {"oneOf": schemas},
                        "example": bodies[0].example,
                    }
                },
            }
            responses.setdefault("400", ERROR)
            responses.setdefault("413", ERROR)
        if self.auth == "keys":
            operation["security"] = [{"bearer": []}, {"basic": []}]
            responses.setdefault("401", {"$ref": "#/components/responses/Unauthorized"})
        elif self.auth == "session":
            operation["description"] = SESSION_NOTE + (LIMIT_NOTE if self.limited else "")
            responses.setdefault("401", {"$ref": "#/components/responses/Unauthorized"})
        if self.limited:
            responses.setdefault("429", {"$ref": "#/components/responses/TooManyRequests"})
        if self.query:
            operation["parameters"] = list(self.query)
        operation["responses"] = responses
        return operation


def documented(
    summary: str,
    tag: str,
    responses: dict[str, Any] | None = None,
    *,
    methods: Sequence[str] | None = None,
    **options: Any,
) -> Callable[[View], View]:
    """Describe a view in the OpenAPI document (stack one per method when they differ)."""
    operation = Operation(
        summary,
        tag,
        responses if responses is not None else {"200": OK},
        methods=frozenset(m.upper() for m in methods) if methods else None,
        **options,
    )

    def decorate(view: View) -> View:
        view.__dict__.setdefault("openapi", []).append(operation)
        return view

    return decorate


def _path_item(rule: str) -> tuple[str, list[dict[str, Any]]]:
    """``/inbox/<int(max=...):message_id>/read`` -> (``/inbox/{message_id}/read``, parameters)."""
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": CONVERTERS.get(converter or "", {"type": "string"}),
        }
        for converter, name in _VARIABLE.findall(rule)
    ]
    return _VARIABLE.sub(r"{\2}", rule), parameters


def build_spec(server: str) -> dict[str, Any]:
    """The OpenAPI document of every documented route of the blueprint."""
    prefix = current_app.config["ENGAGE_URL_PREFIX"].rstrip("/")
    paths: dict[str, Any] = {}
    for rule in sorted(current_app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.endpoint.startswith(f"{bp.name}."):
            continue
        operations: list[Operation] = getattr(
            current_app.view_functions[rule.endpoint], "openapi", []
        )
        if not operations:
            continue
        path, parameters = _path_item(rule.rule.removeprefix(prefix))
        item = paths.setdefault(path, {})
        if parameters:
            item["parameters"] = parameters
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            for operation in operations:
                if operation.methods is None or method in operation.methods:
                    item[method.lower()] = operation.render()
                    break
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
                name: json_answer(description, {"$ref": "#/components/schemas/Error"})
                for name, description in (
                    ("Error", "Bad request; the error names the field"),
                    ("Unauthorized", "Missing or unknown credentials"),
                    ("TooManyRequests", "Over ENGAGE_BROWSER_RATE_LIMIT; see Retry-After"),
                )
            },
        },
    }


@bp.get("/openapi.json")
@documented("This document", "Meta")
def openapi() -> ResponseReturnValue:
    """The OpenAPI 3.1 description of this blueprint."""
    server = request.url_root.rstrip("/") + current_app.config["ENGAGE_URL_PREFIX"]
    return jsonify(build_spec(server))
