"""Message templates: Jinja rendered in a sandbox.

Templates see ``customer`` (attributes plus ``id`` and ``email``) and
``unsubscribe_url``. HTML bodies are autoescaped; a plain-text part is derived
from the HTML. Unsafe attribute access raises at render time and is reported as
:class:`~flask_engage.errors.InvalidTemplate`.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import Template, TemplateError, Undefined, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from ..errors import InvalidTemplate

_TAG = re.compile(r"<[a-zA-Z!/][^>]*>")
_BREAKS = re.compile(r"<\s*(br|/p|/div|/h[1-6]|/li|/tr)\s*/?>", re.IGNORECASE)
_LINK = re.compile(r"<a\s[^>]*href=\"([^\"]*)\"[^>]*>(.*?)</a>", re.IGNORECASE | re.DOTALL)

#: Largest string or list a template may build with ``*``.
MAX_SIZE = 100_000


class Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, stricter: unsafe attributes raise instead of rendering
    empty, and ``*`` / ``**`` cannot build huge values."""

    intercepted_binops = frozenset({"*", "**"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} is unsafe"
        )

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > 64:
            raise SecurityError("exponent too large")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    if len(seq) * times > MAX_SIZE:
                        raise SecurityError("repetition too large")
        return super().call_binop(context, operator, left, right)


_html_env = Sandbox(autoescape=True, undefined=Undefined)
_text_env = Sandbox(autoescape=False, undefined=Undefined)


def _check_names(env: Sandbox, source: str) -> None:
    """Reject private attribute names anywhere in the template, even in branches not taken."""
    tree = env.parse(source)
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        name: Any = node.attr if isinstance(node, nodes.Getattr) else None
        if isinstance(node, nodes.Getitem):
            name = getattr(node.arg, "value", None)
        if isinstance(name, str) and name.startswith("_"):
            raise SecurityError(f"access to attribute {name!r} is unsafe")


SAMPLE_CONTEXT = {
    "customer": {"id": "1", "email": "someone@example.com"},
    "unsubscribe_url": "https://example.com/unsubscribe",
}


def is_html(body: str) -> bool:
    """True when a body contains HTML tags (it is then sent as HTML)."""
    return bool(_TAG.search(body))


def check_template(source: str, field: str) -> str:
    """Compile a template and render it for a sample customer; raise on failure.

    Errors that depend on a customer's data (a ``TypeError`` on a missing value...)
    cannot be judged from the sample: they fail that customer's message at send time.
    """
    if not isinstance(source, str):
        raise InvalidTemplate(f"{field}: expected a template string", field=field)
    env = _html_env if is_html(source) else _text_env
    try:
        _check_names(env, source)
        _compile(env, source).render(SAMPLE_CONTEXT)
    except SecurityError as exc:
        raise InvalidTemplate(f"{field}: unsafe template: {exc}", field=field) from None
    except TemplateError as exc:
        raise InvalidTemplate(f"{field}: {exc}", field=field) from None
    except Exception:  # data-dependent; see the docstring
        pass
    return source


@lru_cache(maxsize=256)
def _compile(env: Sandbox, source: str) -> Template:
    return env.from_string(source)


def _render(env: Sandbox, source: str, context: dict[str, Any], field: str) -> str:
    try:
        return _compile(env, source).render(context)
    except SecurityError as exc:
        raise InvalidTemplate(f"{field}: unsafe template: {exc}", field=field) from None
    except Exception as exc:
        raise InvalidTemplate(f"{field}: {type(exc).__name__}: {exc}", field=field) from None


@dataclass
class Rendered:
    """A message ready for its channel."""

    subject: str | None
    text: str
    html: str | None


def html_to_text(markup: str) -> str:
    """A readable plain-text version of an HTML body (links kept as ``text (url)``)."""
    text = _LINK.sub(lambda m: f"{m.group(2)} ({m.group(1)})", markup)
    text = _BREAKS.sub("\n", text)
    text = _TAG.sub("", text)
    text = html.unescape(text)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(line.strip() for line in text.splitlines())).strip()


def render(
    subject: str | None, body: str, context: dict[str, Any], *, html: bool = True
) -> Rendered:
    """Render subject and body; raises InvalidTemplate (naming which) on failure.

    A body with HTML tags is rendered as HTML (autoescaped, plus a text part)
    unless ``html`` is False: then every body is plain text, rendered as written.
    """
    rendered_subject = None
    if subject is not None:
        rendered_subject = " ".join(_render(_text_env, subject, context, "subject").split())
    if html and is_html(body):
        markup = _render(_html_env, body, context, "body")
        return Rendered(rendered_subject, html_to_text(markup), markup)
    return Rendered(rendered_subject, _render(_text_env, body, context, "body"), None)
