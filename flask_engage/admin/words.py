"""Plain words for people: errors, statuses and settings as a marketer reads them.

Engage's errors start with the path of what is wrong (``filters.all[0].op: unknown
operator 'equals'``): precise for a developer, jargon for everyone else. The admin
shows :func:`plain` first and keeps the original as a detail.
"""

from __future__ import annotations

import re
from typing import Any

from markupsafe import Markup, escape

from ..channels import all_channels

#: Words for path parts; ``None``: the part adds nothing for people.
_PARTS: dict[str, str | None] = {
    "filters": "Filter",
    "all": None,
    "any": None,
    "not": "not",
    "where": "property condition",
    "attribute": "attribute name",
    "event": "event name",
    "op": "operator",
    "value": "value",
    "count": "count",
    "sum": "sum",
    "avg": "average",
    "min": "minimum",
    "max": "maximum",
    "property": "property",
    "window": "time window",
    "last_days": "days",
    "last_hours": "hours",
    "older_than_days": "days",
    "since": "start",
    "until": "time of day",
    "between": "dates",
    "calendar": "period",
    "segment": "segment",
    "segments": "segment",
    "channel": "channel",
    "steps": "Step",
    "send": None,
    "wait": None,
    "if": "condition",
    "exit": None,
    "days": "days",
    "hours": "hours",
    "minutes": "minutes",
    "subject": "subject",
    "body": "body",
    "url": "web address",
    "headers": "headers",
    "name": "name",
    "trigger": "trigger",
    "joins": "segment",
    "leaves": "segment",
    "scheduled_at": "schedule",
    "csrf_token": "security token",
    "email": "email address",
    "customer": "customer",
}
_TOKEN = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]")
_CLASS = re.compile(r"^(?:[A-Z][A-Za-z]*: )+")
_PATH = re.compile(r"^([A-Za-z_][\w.\[\]-]*): ")
_EXCEPTION = re.compile(r"(?:\b(subject|body): )?\b([A-Z][A-Za-z]*(?:Error|Exception)): ")
#: What common template failures mean.
_TEMPLATE_FAILURES = {
    "TypeError": "a value it uses is missing or of the wrong kind for this customer",
    "UndefinedError": "a value it uses is missing for this customer",
    "ZeroDivisionError": "it divides by zero for this customer",
    "ValueError": "a value it uses has the wrong form for this customer",
    "KeyError": "a value it uses is missing for this customer",
}
_JARGON = {
    "no_address": "no address",
    "this_month": "this month",
    "last_month": "last month",
    "this_week": "this week",
    "not_in": "not in",
    "is_true": "is true",
    "is_false": "is false",
}


def where(path: str) -> str:
    """``filters.all[1].where[0].op`` -> ``Filter › condition 2 › property condition 1 ›
    operator``."""
    words: list[str] = []
    for name, index in _TOKEN.findall(path):
        if index:
            number = int(index) + 1
            if words and words[-1] in ("Step", "segment", "property condition"):
                words[-1] = f"{words[-1]} {number}"
            else:
                words.append(f"condition {number}")
            continue
        word = _PARTS.get(name, name.replace("_", " "))
        if word is not None:
            words.append(word)
    return " › ".join(words)


def dejargon(text: str) -> str:
    """Channel names as their labels, and other internal names as words."""
    for channel in all_channels():
        if "_" in channel.name:
            text = re.sub(rf"\b{re.escape(channel.name)}\b", channel.label.lower(), text)
    for token, words in _JARGON.items():
        text = re.sub(rf"\b{token}\b", words, text)
    return text


def plain(message: str) -> str:
    """An error message for people: its path in words, a failing template explained."""
    message = _CLASS.sub("", message)  # "InvalidTemplate: body: ..." -> "body: ..."
    found = _PATH.match(message)
    rest = message[found.end() :] if found else message
    failure = _EXCEPTION.search(rest)
    if failure and failure.group(2) in _TEMPLATE_FAILURES:
        part = failure.group(1) or "template"
        meaning = _TEMPLATE_FAILURES[failure.group(2)]
        rest = f"{rest[: failure.start()]}the {part} fails: {meaning} ({rest[failure.end() :]})"
    elif failure:
        rest = f"{rest[: failure.start()]}{rest[failure.end() :]}"
    rest = dejargon(rest)
    rest = rest[:1].upper() + rest[1:]
    if found:
        place = where(found.group(1))
        return f"{place[:1].upper()}{place[1:]}: {rest}"
    return rest


def explain(error: Any) -> Markup:
    """An error as HTML: plain words, then the original message as a small detail."""
    message = str(error)
    words = plain(message)
    if words == message:
        return Markup(escape(message))
    return Markup(
        f'{escape(words)}<small class="d-block text-muted engage-detail">Details: '
        f"<code>{escape(message)}</code></small>"
    )


def channel_label(name: str) -> str:
    """``in_app`` -> ``In-app``."""
    for channel in all_channels():
        if channel.name == name:
            return channel.label
    return name


#: What the automation editor calls each step kind.
STEP_LABELS = {
    "wait": "Wait",
    "if": "Continue only if",
    "send": "Send a message",
    "exit": "End here",
    "wait_for": "Wait for an event",
    "branch": "If / otherwise",
}

#: Broadcast and message statuses, and Bootstrap colours for them.
STATUS_COLOURS = {
    "draft": "secondary",
    "scheduled": "info",
    "queued": "info",
    "sending": "primary",
    "sent": "success",
    "partial": "warning",
    "failed": "danger",
    "cancelled": "secondary",
    "skipped": "secondary",
    "active": "success",
    "waiting": "info",
    "completed": "success",
    "exited": "secondary",
    "parked": "danger",
}


def status_colour(status: str) -> str:
    """The Bootstrap colour of a status badge (``failed`` is red)."""
    return STATUS_COLOURS.get(str(status), "secondary")


def who(customer: Any) -> str:
    """A customer as people know them: their name, else their email, else their id."""
    attributes = customer.attributes or {}
    name = attributes.get("name") or attributes.get("full_name")
    if not name:
        name = " ".join(
            str(attributes[key]) for key in ("first_name", "last_name") if attributes.get(key)
        )
    return str(name or customer.email or f"Customer {customer.external_id}")
