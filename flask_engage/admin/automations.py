"""Automations: a visual editor (trigger, then steps as forms: waits, conditions with the
segment builder, sends with their channel's fields, a preview and a test), the JSON for
power users, and each automation's runs, messages and their outcomes per step."""

from __future__ import annotations

import json
from typing import Any

from flask import current_app, flash, jsonify, redirect, request, url_for
from flask_admin import expose

from ..automations.overview import automations_with_segments
from ..automations.steps import WAIT_UNITS, describe_step, step_keys
from ..channels import get_channel
from ..channels.email import EmailChannel, build
from ..channels.webhook import WebhookChannel, send_test_request
from ..customers import find_customer
from ..db import host_session
from ..errors import EngageError, ValidationError
from ..lists.service import all_lists
from ..messages.compose import compose
from ..models import Automation, Customer, CustomerList, Segment
from ..segments.browse import all_segments, first_member, names
from .base import SMALL_ID, EngageView, engage, found_or_404, payload
from .broadcasts import channels_data
from .charts import CHART_DAYS, engagement_chart
from .forms import AutomationForm, parse_json
from .paging import keyset
from .words import STEP_LABELS, explain, plain, who

#: What a new automation starts with.
FIRST_STEPS: list[dict[str, Any]] = [{"wait": {"days": 1}}]


def step_rows(steps: list[dict[str, Any]], stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Every step of an automation, nested steps included (from ``automation_stats``'s
    outline), with its messages by status and its outcomes (send steps). Top-level
    steps also carry their stored form (``step``) and technical ``code``."""
    top = iter(steps)
    rows = []
    for entry in stats["steps"]:
        step = next(top) if entry["depth"] == 0 else None
        rows.append(
            {
                **entry,
                "text": describe_step(step) if step else entry["description"],
                "code": step_code(step) if step else None,
                "stored": step,
                "messages": stats["messages_by_step"].get(entry["step"]) or {},
                "outcomes": stats["outcomes_by_step"].get(entry["step"]),
            }
        )
    return rows


def step_code(step: dict[str, Any]) -> str:
    """A step in a compact technical form, for developers (``Send in_app: 'Hi'``)."""
    ((kind, spec),) = step.items()
    if kind == "wait":
        if "until" in spec:
            return f"Wait until {spec['until']}"
        return "Wait " + ", ".join(f"{amount:g} {unit}" for unit, amount in spec.items())
    if kind == "send":
        subject = f": {spec['subject']!r}" if spec.get("subject") else ""
        return f"Send {spec['channel']}{subject}"
    return f"{kind} {json.dumps(spec)}"


class AutomationsView(EngageView):
    """Automations: list, editor, preview and test of sends, detail, pause, delete."""

    @expose("/")
    def index(self) -> Any:
        page = keyset(
            host_session(),
            automations_with_segments(),
            Automation.id,
            cursor="before",
            descending=True,
            scalars=False,
            key_of=lambda row: row[0].id,
        )
        return self.render("engage_admin/automations.html", page=page)

    # -- the editor ------------------------------------------------------------------------
    def _editor(
        self,
        automation: Automation | None,
        form: AutomationForm,
        status: int = 200,
        error: EngageError | None = None,
    ) -> Any:
        session = host_session()
        if not form.steps.data:
            steps = automation.steps if automation else FIRST_STEPS
            form.steps.data = json.dumps(steps, indent=2)
        data = {
            "kinds": [{"key": key, "label": STEP_LABELS.get(key, key)} for key in step_keys()],
            "wait_units": list(WAIT_UNITS),
            "channels": channels_data(),
            "names": {**names(session), "values_url": url_for("engage_segments.values")},
            "schema_url": url_for("engage.filter_schema"),
            "count_url": url_for("engage_segments.count"),
            "preview_url": url_for(".preview"),
            "test_url": url_for(".test"),
            "timezone": current_app.config["ENGAGE_TIMEZONE"],
            "error_field": getattr(error, "field", None),
            "error_message": str(error) if error else None,
            "error_plain": plain(str(error)) if error else None,
        }
        return self.render(
            "engage_admin/automation_form.html",
            automation=automation,
            form=form,
            data=data,
            error=explain(error) if error else None,
            error_field=data["error_field"],
        ), status

    @expose("/new", methods=("GET", "POST"))
    def new(self) -> Any:
        segments, lists = all_segments(host_session()), all_lists(host_session(), archived=True)
        if request.method == "GET":
            form = AutomationForm(segments=segments, lists=lists, data={"active": True})
            return self._editor(None, form)
        return self._save(None, AutomationForm(request.form, segments=segments, lists=lists))

    @expose(f"/<{SMALL_ID}:automation_id>/edit", methods=("GET", "POST"))
    def edit(self, automation_id: int) -> Any:
        automation = found_or_404(Automation, automation_id)
        segments, lists = all_segments(host_session()), all_lists(host_session(), archived=True)
        if request.method == "GET":
            return self._editor(automation, AutomationForm.of(automation, segments, lists))
        form = AutomationForm(request.form, segments=segments, lists=lists)
        return self._save(automation, form)

    def _save(self, automation: Automation | None, form: AutomationForm) -> Any:
        try:
            form.check()
            steps = parse_json(form.steps.data or "", "steps")
            fields = {
                "trigger": form.trigger(),
                "steps": steps,
                "active": bool(form.active.data),
                "reentry": bool(form.reentry.data),
                "exit_on_leave": bool(form.exit_on_leave.data),
            }
            if automation is None:
                saved = engage().create_automation(form.name.data or "", **fields)
            else:
                saved = engage().update_automation(
                    automation.id, name=form.name.data or "", **fields
                )
        except EngageError as exc:
            host_session().rollback()
            flash(explain(exc), "error")
            return self._editor(automation, form, 400, exc)
        flash(f"Automation {saved.name!r} saved.", "success")
        return self.back("details", automation_id=saved.id)

    # -- a send step's preview and test ------------------------------------------------------
    def _send_step(self, body: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The checked channel and spec of the posted ``step`` (a send step's value)."""
        spec = body.get("step")
        if not isinstance(spec, dict):
            raise ValidationError("step: send the send step to preview", field="step")
        channel = get_channel(spec.get("channel"), "step.channel")
        return channel, channel.check(spec, "step.")

    def _customer(self, body: dict[str, Any]) -> Customer | None:
        """The customer a preview is written for: the one asked for (email, name or id),
        else a member of the trigger segment, else None (a sample customer)."""
        session = host_session()
        wanted = body.get("customer")
        if isinstance(wanted, str) and wanted.strip():
            found = find_customer(session, wanted.strip()[:200])
            if found is None:
                raise ValidationError(
                    f"customer: no customer with the email, name or id {wanted.strip()[:80]!r}",
                    field="customer",
                )
            return found
        segment = body.get("segment")
        if isinstance(segment, int) and not isinstance(segment, bool) and 0 < segment < 2**31:
            return first_member(session, segment)
        return None

    @expose("/preview", methods=("POST",))
    def preview(self) -> Any:
        """A send step rendered for a customer, as delivery would render it (JSON)."""
        body = payload()
        channel, spec = self._send_step(body)
        customer = self._customer(body) or Customer(
            external_id="sample", email="someone@example.com", attributes={}
        )
        composed = compose(customer, channel, spec.get("subject"), spec["body"], test=True)
        return jsonify(
            customer=who(customer),
            subject=composed.rendered.subject,
            text=composed.rendered.text,
            html=composed.rendered.html,
        )

    @expose("/test", methods=("POST",))
    def test(self) -> Any:
        """Send a send step once now: an email to an address of the admin's choosing, or
        a webhook request to its URL (JSON report)."""
        body = payload()
        channel, spec = self._send_step(body)
        customer = self._customer(body)
        if isinstance(channel, WebhookChannel):
            report = send_test_request(
                spec["url"], spec["body"], spec.get("headers"), customer=customer
            )
            return jsonify(
                ok=report.ok, status=report.status, latency_ms=report.latency_ms, error=report.error
            )
        if not isinstance(channel, EmailChannel):
            raise ValidationError(
                f"step.channel: test sends are for email and webhook steps, not {channel.label}",
                field="step.channel",
            )
        address = body.get("email")
        if not isinstance(address, str) or "@" not in address or len(address) > 320:
            raise ValidationError("email: enter the address to send the test to", field="email")
        if any(c in address for c in " \r\n"):
            raise ValidationError("email: enter one address", field="email")
        person = customer or Customer(external_id="test", email=address, attributes={})
        composed = compose(person, channel, spec.get("subject"), spec["body"], test=True)
        composed.rendered.subject = f"[Test] {composed.rendered.subject or ''}".strip()
        assert composed.unsubscribe_url is not None
        message = build(person, composed.rendered, composed.unsubscribe_url)
        message.recipients = [address]
        current_app.extensions["mail"].send(message)
        return jsonify(ok=True, sent_to=address, customer=who(person))

    # -- an automation -----------------------------------------------------------------------
    @expose(f"/<{SMALL_ID}:automation_id>")
    def details(self, automation_id: int) -> Any:
        automation = found_or_404(Automation, automation_id)
        session = host_session()
        segment = (
            session.get(Segment, automation.trigger_segment_id)
            if automation.trigger_segment_id is not None
            else None
        )
        trigger_list = (
            session.get(CustomerList, automation.trigger_list_id)
            if automation.trigger_list_id is not None
            else None
        )
        stats = engage().automation_stats(automation.id)
        sent = stats["outcomes_by_step"]
        return self.render(
            "engage_admin/automation.html",
            automation=automation,
            segment=segment,
            trigger_list=trigger_list,
            steps=step_rows(automation.steps, stats),
            stats=stats,
            engagement_chart=engagement_chart(
                engage().engagement_by_day(automation=automation.id, days=CHART_DAYS)
            )
            if any(outcome["sent"] for outcome in sent.values())
            else None,
            chart_days=CHART_DAYS,
            steps_json=json.dumps(automation.steps, indent=2),
        )

    @expose(f"/<{SMALL_ID}:automation_id>/toggle", methods=("POST",))
    def toggle(self, automation_id: int) -> Any:
        automation = found_or_404(Automation, automation_id)
        try:
            saved = engage().update_automation(automation.id, active=not automation.active)
        except EngageError as exc:
            return self.failed(exc, "details", automation_id=automation_id)
        state = "active" if saved.active else "paused"
        flash(f"Automation {saved.name!r} is {state}.", "success")
        return self.back("details", automation_id=automation_id)

    @expose(f"/<{SMALL_ID}:automation_id>/delete", methods=("POST",))
    def delete(self, automation_id: int) -> Any:
        automation = found_or_404(Automation, automation_id)
        engage().delete_automation(automation.id)
        flash(f"Automation {automation.name!r} deleted; its live runs are cancelled.", "success")
        return redirect(url_for(".index"))
