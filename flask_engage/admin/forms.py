"""The admin's forms (WTForms on Flask-Admin's ``BaseForm``).

Forms read, re-show and coerce what an admin typed; Engage's services validate it
and name the bad field. Every form renders the session's CSRF token
(:mod:`.security`), which the views check before any POST runs.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import current_app
from flask_admin.form import BaseForm
from wtforms import (  # type: ignore[import-untyped]
    BooleanField,
    DateTimeLocalField,
    HiddenField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.csrf.core import CSRF  # type: ignore[import-untyped]
from wtforms.validators import (  # type: ignore[import-untyped]
    Optional,
)
from wtforms.validators import ValidationError as FieldError

from ..channels import all_channels
from ..errors import ValidationError
from ..models import Automation, Broadcast, CustomerList, Segment, TriggerKind
from .security import FORM_FIELD, csrf_token


class SessionTokenCSRF(CSRF):
    """WTForms CSRF on the admin's session token (the same one AJAX calls send)."""

    def generate_csrf_token(self, csrf_token_field: Any) -> str:
        return csrf_token()

    def validate_csrf_token(self, form: Any, field: Any) -> None:
        if field.data != csrf_token():
            raise FieldError("missing or invalid CSRF token; reload the page and try again")


class EngageForm(BaseForm):
    """A form of the admin: CSRF token included; errors as one ValidationError."""

    class Meta:
        csrf = True
        csrf_class = SessionTokenCSRF
        csrf_field_name = FORM_FIELD

    def check(self) -> None:
        """Validate the fields; raise the first error as a ValidationError naming its field."""
        if not self.validate():
            name, messages = next(iter(self.errors.items()))
            message = messages[0] if isinstance(messages, list) else str(messages)
            raise ValidationError(f"{name}: {message}", field=name)


def segment_choices(segments: list[Segment]) -> list[tuple[int, str]]:
    """Segments for a select: ``(id, "Name (members)")``."""
    return [(s.id, f"{s.name} ({s.member_count:,} customers)") for s in segments]


class SegmentForm(EngageForm):
    """Name, description and filters (JSON, written by the builder) of a segment."""

    name = StringField("Name")
    description = StringField("Description")
    filters = TextAreaField("Filters (JSON)")
    #: Start automations for the customers this edit makes join or leave.
    trigger_automations = BooleanField("Run automations for customers who join or leave now")
    #: Set once the admin has seen the edit's impact.
    confirmed = HiddenField()


class ListForm(EngageForm):
    """A list's name, description, sign-up settings and where people go after confirming."""

    name = StringField("Name")
    description = TextAreaField("Description")
    public = BooleanField("Public: anyone may subscribe through its sign-up form")
    double_optin = BooleanField("Double opt-in: people confirm by email before they are on it")
    redirect_url = StringField("After confirming, send people to (URL, optional)")

    @classmethod
    def of(cls, found: CustomerList) -> ListForm:
        """The form filled with a saved list."""
        return cls(
            data={
                "name": found.name,
                "description": found.description or "",
                "public": found.public,
                "double_optin": found.double_optin,
                "redirect_url": found.redirect_url or "",
            }
        )

    def fields(self) -> dict[str, Any]:
        """The list's fields as ``create_list`` / ``update_list`` take them."""
        return {
            "name": self.name.data or "",
            "description": self.description.data or "",
            "public": bool(self.public.data),
            "double_optin": bool(self.double_optin.data),
            "redirect_url": (self.redirect_url.data or "").strip(),
        }


class BroadcastForm(EngageForm):
    """A broadcast draft: channel from the registry, its own settings, audience (segments
    and lists, given as ``(list, subscribers)``), schedule."""

    name = StringField("Name")
    channel = SelectField("Channel")
    segments = SelectMultipleField("Segments", coerce=int)
    lists = SelectMultipleField("Lists", coerce=int)
    subject = StringField("Subject")
    body = TextAreaField("Body")
    url = StringField("Web address (URL)")
    headers = TextAreaField("Headers (one Name: value per line)")
    send_to_unsubscribed = BooleanField(
        "Send to unsubscribed customers too (transactional messages only)"
    )
    scheduled_at = DateTimeLocalField(
        "Send at", format=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"], validators=[Optional()]
    )
    action = HiddenField()

    def __init__(
        self,
        *args: Any,
        segments: list[Segment],
        lists: list[tuple[CustomerList, int]],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.channel.choices = [(c.name, c.label) for c in all_channels()]
        self.segments.choices = segment_choices(segments)
        self.lists.choices = [
            (
                found.id,
                f"{found.name} (archived)"
                if found.archived_at
                else f"{found.name} ({n:,} subscribed)",
            )
            for found, n in lists
        ]

    @classmethod
    def of(
        cls,
        broadcast: Broadcast,
        segments: list[Segment],
        lists: list[tuple[CustomerList, int]],
    ) -> BroadcastForm:
        """The form filled with a saved broadcast."""
        options = broadcast.options or {}
        headers = "\n".join(f"{k}: {v}" for k, v in (options.get("headers") or {}).items())
        return cls(
            segments=segments,
            lists=lists,
            data={
                "name": broadcast.name,
                "channel": broadcast.channel,
                "segments": list(broadcast.segment_ids or []),
                "lists": list(broadcast.list_ids or []),
                "subject": broadcast.subject or "",
                "body": broadcast.body,
                "url": options.get("url", ""),
                "headers": headers,
                "send_to_unsubscribed": broadcast.send_to_unsubscribed,
                "scheduled_at": local_time(broadcast.scheduled_at),
            },
        )

    def fields(self) -> dict[str, Any]:
        """The broadcast's fields as ``create_broadcast`` takes them."""
        channel = next((c for c in all_channels() if c.name == self.channel.data), None)
        options: dict[str, Any] = {}
        if channel is not None:
            if "url" in channel.options:
                options["url"] = (self.url.data or "").strip()
            if "headers" in channel.options and (self.headers.data or "").strip():
                options["headers"] = parse_headers(self.headers.data or "")
        needs_subject = channel is not None and channel.needs_subject
        return {
            "channel": self.channel.data or "",
            "segments": list(self.segments.data or []),
            "lists": list(self.lists.data or []),
            "subject": (self.subject.data or None) if needs_subject else None,
            "body": self.body.data or "",
            "send_to_unsubscribed": bool(self.send_to_unsubscribed.data),
            "scheduled_at": utc_time(self.scheduled_at.data),
            "options": options or None,
        }


class AutomationForm(EngageForm):
    """Name, trigger (a segment joined or left, a list subscribed to or left, or an
    event), flags and steps (JSON, written by the step editor)."""

    name = StringField("Name")
    trigger_kind = SelectField(
        "When a customer",
        choices=[
            (TriggerKind.JOINS.value, "joins the segment"),
            (TriggerKind.LEAVES.value, "leaves the segment"),
            (TriggerKind.SUBSCRIBES.value, "subscribes to the list"),
            (TriggerKind.UNSUBSCRIBES.value, "unsubscribes from the list"),
            (TriggerKind.EVENT.value, "does the event"),
        ],
    )
    #: Checked in :meth:`trigger`, against the choices, for the trigger's kind only.
    segment = SelectField("Segment", coerce=int, validate_choice=False)
    customer_list = SelectField("List", coerce=int, validate_choice=False)
    event = StringField("Event")
    where = TextAreaField("Only when the event's properties match (JSON, optional)")
    steps = TextAreaField("Steps (JSON)")
    active = BooleanField("Active")
    reentry = BooleanField("Customers may go through it again after leaving and re-joining")
    exit_on_leave = BooleanField("End a run when the customer leaves the segment")

    def __init__(
        self, *args: Any, segments: list[Segment], lists: list[CustomerList], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.segment.choices = [(s.id, s.name) for s in segments]
        self.customer_list.choices = [
            (found.id, f"{found.name} (archived)" if found.archived_at else found.name)
            for found in lists
        ]

    @classmethod
    def of(
        cls, automation: Automation, segments: list[Segment], lists: list[CustomerList]
    ) -> AutomationForm:
        """The form filled with a saved automation."""
        where = automation.trigger_where
        return cls(
            segments=segments,
            lists=lists,
            data={
                "name": automation.name,
                "trigger_kind": automation.trigger_kind,
                "segment": automation.trigger_segment_id,
                "customer_list": automation.trigger_list_id,
                "event": automation.trigger_event or "",
                "where": json.dumps(where, indent=2) if where else "",
                "active": automation.active,
                "reentry": automation.reentry,
                "exit_on_leave": automation.exit_on_leave,
            },
        )

    def trigger(self) -> dict[str, Any]:
        """The trigger as ``create_automation`` takes it (the services check it)."""
        kind = self.trigger_kind.data
        if kind == TriggerKind.EVENT:
            trigger: dict[str, Any] = {"event": (self.event.data or "").strip()}
            where = (self.where.data or "").strip()
            if where:
                trigger["where"] = parse_json(where, "trigger.where")
            return trigger
        if kind in (TriggerKind.SUBSCRIBES, TriggerKind.UNSUBSCRIBES):
            return {kind: _chosen(self.customer_list, "list")}
        return {kind: _chosen(self.segment, "segment")}


def _chosen(field: SelectField, what: str) -> int:
    """The id chosen in a select, which must be one of its choices."""
    if field.data not in {value for value, _ in field.choices}:
        raise ValidationError(f"trigger: choose a {what}", field="trigger")
    return int(field.data)


def parse_json(text: str, field: str) -> Any:
    """JSON an admin typed, or a ValidationError naming ``field``."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValidationError(f"{field}: the JSON is nested too deeply", field=field) from None
    except ValueError as exc:
        raise ValidationError(f"{field}: not valid JSON ({exc})", field=field) from None


def parse_headers(text: str) -> dict[str, str]:
    """``Name: value`` lines as a dict (the webhook channel checks names and values)."""
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise ValidationError(
                f"headers: line {number} should look like 'Name: value'", field="headers"
            )
        headers[name.strip()] = value.strip()
    return headers


def _zone() -> ZoneInfo:
    return ZoneInfo(current_app.config["ENGAGE_TIMEZONE"])


def utc_time(local: datetime | None) -> datetime | None:
    """A ``datetime-local`` value (in ``ENGAGE_TIMEZONE``) as an aware datetime."""
    return None if local is None else local.replace(tzinfo=_zone())


def local_time(moment: datetime | None) -> datetime | None:
    """An aware datetime as the naive local time a ``datetime-local`` field shows."""
    return None if moment is None else moment.astimezone(_zone()).replace(tzinfo=None)
