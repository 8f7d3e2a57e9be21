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
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from ..errors import InvalidTemplate

_TAG = re.compile(r"<[a-zA-Z!/][^>]*>")
_BREAKS = re.compile(r"<\s*(br|/p|/div|/h[1-6]|/li|/tr)\s*/?>", re.IGNORECASE)
_LINK = re.compile(r"<a\s[^>]*href=\"([^\"]*)\"[^>]*>(.*?)</a>", re.IGNORECASE | re.DOTALL)

_html_env = ImmutableSandboxedEnvironment(autoescape=True, undefined=Undefined)
_text_env = ImmutableSandboxedEnvironment(autoescape=False, undefined=Undefined)
_strict_env = ImmutableSandboxedEnvironment(autoescape=False, undefined=StrictUndefined)

SAMPLE_CONTEXT = {
    "customer": {"id": "1", "email": "someone@example.com"},
    "unsubscribe_url": "https://example.com/unsubscribe",
}


def is_html(body: str) -> bool:
    """True when a body contains HTML tags (it is then sent as HTML)."""
    return bool(_TAG.search(body))


def check_template(source: str, field: str) -> str:
    """Compile a template and render it for a sample customer; raise on failure."""
    if not isinstance(source, str):
        raise InvalidTemplate(f"{field}: expected a template string", field=field)
    try:
        (_html_env if is_html(source) else _text_env).from_string(source).render(SAMPLE_CONTEXT)
    except SecurityError as exc:
        raise InvalidTemplate(f"{field}: unsafe template: {exc}", field=field) from None
    except TemplateError as exc:
        raise InvalidTemplate(f"{field}: {exc}", field=field) from None
    return source


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


def render(subject: str | None, body: str, context: dict[str, Any]) -> Rendered:
    """Render subject and body; raises InvalidTemplate (naming which) on failure."""
    try:
        rendered_subject = None
        if subject is not None:
            rendered_subject = " ".join(_text_env.from_string(subject).render(context).split())
        if is_html(body):
            markup = _html_env.from_string(body).render(context)
            return Rendered(rendered_subject, html_to_text(markup), markup)
        return Rendered(rendered_subject, _text_env.from_string(body).render(context), None)
    except SecurityError as exc:
        raise InvalidTemplate(f"template: unsafe operation: {exc}", field="body") from None
    except TemplateError as exc:
        raise InvalidTemplate(f"template: {exc}", field="body") from None
