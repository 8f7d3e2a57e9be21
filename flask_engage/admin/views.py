"""Flask-Admin views: dashboard, customers, segments (builder), broadcasts, automations.

Every view checks ``ENGAGE_ADMIN_ACCESS`` (403 otherwise) and every POST the
session's CSRF token (400 otherwise), before the view runs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app, flash, jsonify, redirect, request, url_for
from flask_admin import AdminIndexView, BaseView, expose
from sqlalchemy import Text, cast, func, or_, select
from werkzeug.exceptions import abort

from ..channels import get_channel
from ..channels.email import build
from ..db import host_session
from ..errors import EngageError, ValidationError
from ..lists.service import list_choices
from ..messages.broadcasts import segment_names
from ..messages.compose import compose
from ..models import (
    AttributeDefinition,
    Automation,
    Broadcast,
    Customer,
    Event,
    Membership,
    MembershipChange,
    Message,
    Segment,
    utcnow,
)
from .charts import bar_chart, line_chart
from .security import csrf_valid, is_allowed

PAGE = 50


def _engage() -> Any:
    return current_app.extensions["engage"]


def _wants_json() -> bool:
    return request.is_json or request.accept_mimetypes.best == "application/json"


def _error_field(exc: Exception) -> str | None:
    return getattr(exc, "field", None)


class EngageViewMixin:
    """Access control and CSRF for every Engage admin view."""

    def is_accessible(self) -> bool:
        return is_allowed()

    def inaccessible_callback(self, name: Any, **kwargs: Any) -> Any:
        abort(403)

    def _handle_view(self, name: str, **kwargs: Any) -> Any:
        if not self.is_accessible():
            return self.inaccessible_callback(name, **kwargs)
        if request.method == "POST" and not csrf_valid():
            message = "csrf_token: missing or invalid CSRF token; reload the page and try again"
            if _wants_json() or not request.form:
                return jsonify(error=message, field="csrf_token"), 400
            flash(message, "error")
            return self.render("engage_admin/error.html", message=message), 400  # type: ignore[attr-defined]
        # Operations commit in sessions of their own: read their results fresh.
        host_session().expire_all()
        return None

    def back(self, endpoint: str, **values: Any) -> Any:
        return redirect(url_for(f"{self.endpoint}.{endpoint}", **values))  # type: ignore[attr-defined]


def _dashboard(view: BaseView) -> str:
    session = host_session()
    now = utcnow()
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    first_day = today - timedelta(days=6)
    sends: dict[str, int] = {}
    day = func.date(Message.sent_at)
    for value, n in session.execute(
        select(day, func.count())
        .where(Message.status == "sent", Message.sent_at >= first_day)
        .group_by(day)
    ):
        sends[str(value)[:10]] = n
    labels = [(first_day + timedelta(days=i)).date().isoformat() for i in range(7)]
    return view.render(
        "engage_admin/dashboard.html",
        customers=session.scalar(select(func.count()).select_from(Customer)) or 0,
        events_today=session.scalar(select(func.count()).where(Event.occurred_at >= today)) or 0,
        segments=session.scalar(select(func.count()).select_from(Segment)) or 0,
        sends_week=sum(sends.values()),
        chart=bar_chart(labels, [sends.get(label, 0) for label in labels]),
        links=_links(),
    )


def _links() -> dict[str, str]:
    return {
        name: url_for(f"engage_{name}.index")
        for name in ("customers", "segments", "broadcasts", "automations")
    }


class DashboardIndexView(EngageViewMixin, AdminIndexView):
    """The index page of Engage's own Admin."""

    @expose("/")
    def index(self) -> Any:
        return _dashboard(self)


class DashboardView(EngageViewMixin, BaseView):
    """The dashboard, as a page of the host's Admin."""

    @expose("/")
    def index(self) -> Any:
        return _dashboard(self)


class CustomersView(EngageViewMixin, BaseView):
    """Customers: search and keyset paging; a customer's data, events and messages."""

    @expose("/")
    def index(self) -> Any:
        session = host_session()
        q = request.args.get("q", "").strip()
        before = request.args.get("before", type=int)
        segment_id = request.args.get("segment", type=int)
        query = select(Customer).order_by(Customer.id.desc()).limit(PAGE + 1)
        if before:
            query = query.where(Customer.id < before)
        if segment_id:
            inside = select(Membership.customer_id).where(Membership.segment_id == segment_id)
            query = query.where(Customer.id.in_(inside))
        if q:
            needle = q.lower()
            query = query.where(
                or_(
                    Customer.external_id == q,
                    func.lower(Customer.email).startswith(needle, autoescape=True),
                    func.lower(cast(Customer.attributes, Text)).contains(needle, autoescape=True),
                )
            )
        rows = list(session.scalars(query))
        more = len(rows) > PAGE
        rows = rows[:PAGE]
        return self.render(
            "engage_admin/customers.html",
            customers=rows,
            q=q,
            segment_id=segment_id,
            segments=session.execute(select(Segment.id, Segment.name).order_by(Segment.name)).all(),
            total=session.scalar(select(func.count()).select_from(Customer)) or 0,
            next_before=rows[-1].id if more else None,
            first_page=before is None,
        )

    @expose("/<int:customer_id>")
    def details(self, customer_id: int) -> Any:
        session = host_session()
        customer = session.get(Customer, customer_id)
        if customer is None:
            abort(404)
        before = request.args.get("before", type=int)
        events_query = (
            select(Event)
            .where(Event.customer_id == customer.id)
            .order_by(Event.id.desc())
            .limit(PAGE + 1)
        )
        if before:
            events_query = events_query.where(Event.id < before)
        events = list(session.scalars(events_query))
        more = len(events) > PAGE
        events = events[:PAGE]
        segments = session.scalars(
            select(Segment)
            .join(Membership, Membership.segment_id == Segment.id)
            .where(Membership.customer_id == customer.id)
            .order_by(Segment.name)
        ).all()
        messages = session.scalars(
            select(Message)
            .where(Message.customer_id == customer.id)
            .order_by(Message.id.desc())
            .limit(PAGE)
        ).all()
        return self.render(
            "engage_admin/customer.html",
            customer=customer,
            events=events,
            segments=segments,
            messages=messages,
            next_before=events[-1].id if more else None,
        )


def _definitions(session: Any) -> dict[str, Any]:
    attributes: dict[str, str] = {}
    events: list[str] = []
    properties: dict[str, dict[str, str]] = {}
    for kind, scope, name, type_ in session.execute(
        select(
            AttributeDefinition.kind,
            AttributeDefinition.scope,
            AttributeDefinition.name,
            AttributeDefinition.type,
        ).order_by(AttributeDefinition.name)
    ):
        if kind == "attribute":
            attributes[name] = type_
        elif kind == "event":
            events.append(name)
        elif kind == "property":
            properties.setdefault(scope, {})[name] = type_
    segments = [
        {"id": s.id, "slug": s.slug, "name": s.name}
        for s in session.scalars(select(Segment).order_by(Segment.is_default.desc(), Segment.name))
    ]
    return {
        "attributes": attributes,
        "events": events,
        "properties": properties,
        "segments": segments,
        "lists": list_choices(session),
    }


class SegmentsView(EngageViewMixin, BaseView):
    """Segments: list, the visual builder with a live count, detail with history."""

    @expose("/")
    def index(self) -> Any:
        segments = (
            host_session()
            .scalars(select(Segment).order_by(Segment.is_default.desc(), Segment.name))
            .all()
        )
        return self.render("engage_admin/segments.html", segments=segments)

    def _builder(self, segment: Segment | None, status: int = 200, **form: Any) -> Any:
        session = host_session()
        filters = form.get("filters_text") or json.dumps(
            segment.filters if segment else {"all": []}, indent=2
        )
        data = {
            **_definitions(session),
            "filters_text": filters,
            "count_url": url_for(".count"),
            "error_field": form.get("error_field"),
            "error_message": form.get("error_message"),
            "self_slug": segment.slug if segment else None,
        }
        return self.render(
            "engage_admin/builder.html",
            segment=segment,
            data=data,
            name=form.get("name", segment.name if segment else ""),
            description=form.get("description", (segment.description or "") if segment else ""),
        ), status

    @expose("/new", methods=("GET", "POST"))
    def new(self) -> Any:
        if request.method == "GET":
            return self._builder(None)
        return self._save(None)

    @expose("/<int:segment_id>/edit", methods=("GET", "POST"))
    def edit(self, segment_id: int) -> Any:
        segment = self._get(segment_id)
        if request.method == "GET":
            return self._builder(segment)
        return self._save(segment)

    def _save(self, segment: Segment | None) -> Any:
        name = request.form.get("name", "").strip()
        description = request.form.get("description", "").strip() or None
        text = request.form.get("filters", "")
        form = {"name": name, "description": description or "", "filters_text": text}
        try:
            filters = json.loads(text)
        except ValueError as exc:
            flash(f"filters: not valid JSON ({exc})", "error")
            return self._builder(
                segment, 400, error_field="filters", error_message=str(exc), **form
            )
        try:
            if segment is None:
                saved = _engage().create_segment(name, filters, description=description)
            else:
                saved = _engage().update_segment(
                    segment.id,
                    name=None if segment.is_default else name,
                    filters=None if segment.is_default else filters,
                    description=description,
                )
        except EngageError as exc:
            flash(str(exc), "error")
            return self._builder(
                segment, 400, error_field=_error_field(exc), error_message=str(exc), **form
            )
        flash(f"Segment {saved.name!r} saved: {saved.member_count} members.", "success")
        return self.back("details", segment_id=saved.id)

    @expose("/count", methods=("POST",))
    def count(self) -> Any:
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict) or "filters" not in payload:
            return jsonify(
                error='filters: send a JSON object {"filters": ...}', field="filters"
            ), 400
        session = host_session()
        try:
            matched = _engage().count(payload["filters"])
        except EngageError as exc:
            session.rollback()
            return jsonify(error=str(exc), field=_error_field(exc) or "filters"), 400
        total = session.scalar(select(func.count()).select_from(Customer)) or 0
        percent = round(100.0 * matched / total, 1) if total else 0.0
        return jsonify(count=matched, total=total, percent=percent)

    def _get(self, segment_id: int) -> Segment:
        segment = host_session().get(Segment, segment_id)
        if segment is None:
            abort(404)
        return segment

    @expose("/<int:segment_id>")
    def details(self, segment_id: int) -> Any:
        session = host_session()
        segment = self._get(segment_id)
        after = request.args.get("after", type=int)
        members_query = (
            select(Customer)
            .join(Membership, Membership.customer_id == Customer.id)
            .where(Membership.segment_id == segment.id)
            .order_by(Customer.id)
            .limit(PAGE + 1)
        )
        if after:
            members_query = members_query.where(Customer.id > after)
        members = list(session.scalars(members_query))
        more = len(members) > PAGE
        members = members[:PAGE]
        history = _engage().segment_history(segment, days=30)
        changes = session.execute(
            select(MembershipChange, Customer.external_id)
            .join(Customer, Customer.id == MembershipChange.customer_id)
            .where(MembershipChange.segment_id == segment.id)
            .order_by(MembershipChange.id.desc())
            .limit(20)
        ).all()
        chart = line_chart([p.date.isoformat() for p in history], [p.percent for p in history])
        return self.render(
            "engage_admin/segment.html",
            segment=segment,
            members=members,
            history=history,
            chart=chart,
            changes=changes,
            next_after=members[-1].id if more else None,
            filters_json=json.dumps(segment.filters, indent=2),
        )

    @expose("/<int:segment_id>/recompute", methods=("POST",))
    def recompute(self, segment_id: int) -> Any:
        segment = self._get(segment_id)
        try:
            outcomes = _engage().recompute(segment.id)
        except EngageError as exc:
            flash(str(exc), "error")
        else:
            for outcome in outcomes:
                if outcome.error:
                    flash(f"Recomputing {segment.name} failed: {outcome.error}", "error")
                else:
                    flash(
                        f"Recomputed {segment.name}: {outcome.joined} joined, {outcome.left} left, "
                        f"{outcome.took_ms} ms.",
                        "success",
                    )
        return self.back("details", segment_id=segment_id)

    @expose("/<int:segment_id>/delete", methods=("POST",))
    def delete(self, segment_id: int) -> Any:
        segment = self._get(segment_id)
        try:
            _engage().delete_segment(segment.id)
        except EngageError as exc:
            flash(str(exc), "error")
            return self.back("details", segment_id=segment_id)
        flash(f"Segment {segment.name!r} deleted.", "success")
        return self.back("index")


def _parse_schedule(value: str) -> datetime | None:
    """A ``datetime-local`` field (UTC) or an ISO datetime with an offset."""
    if not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValidationError(
            f"scheduled_at: not a date and time: {value!r}", field="scheduled_at"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class BroadcastsView(EngageViewMixin, BaseView):
    """Broadcasts: compose, preview, test, send or schedule, cancel, progress."""

    @expose("/")
    def index(self) -> Any:
        broadcasts = (
            host_session().scalars(select(Broadcast).order_by(Broadcast.id.desc()).limit(200)).all()
        )
        return self.render("engage_admin/broadcasts.html", broadcasts=broadcasts)

    @expose("/new", methods=("GET", "POST"))
    def new(self) -> Any:
        session = host_session()
        segments = session.scalars(
            select(Segment).order_by(Segment.is_default.desc(), Segment.name)
        ).all()
        form = request.form
        if request.method == "POST":
            try:
                broadcast = _engage().create_broadcast(
                    form.get("name", ""),
                    channel=form.get("channel", ""),
                    segments=[int(s) for s in form.getlist("segments") if s.isdigit()],
                    subject=form.get("subject") or None,
                    body=form.get("body", ""),
                    send_to_unsubscribed=form.get("send_to_unsubscribed") == "on",
                    scheduled_at=_parse_schedule(form.get("scheduled_at", "")),
                )
                if form.get("action") == "send":
                    broadcast = _engage().send_broadcast(broadcast)
            except EngageError as exc:
                flash(str(exc), "error")
                return self.render(
                    "engage_admin/broadcast_form.html",
                    segments=segments,
                    form=form,
                    error_field=_error_field(exc),
                ), 400
            flash(f"Broadcast {broadcast.name!r} is {broadcast.status}.", "success")
            return self.back("details", broadcast_id=broadcast.id)
        return self.render(
            "engage_admin/broadcast_form.html", segments=segments, form=form, error_field=None
        )

    def _get(self, broadcast_id: int) -> Broadcast:
        broadcast = host_session().get(Broadcast, broadcast_id)
        if broadcast is None:
            abort(404)
        return broadcast

    def _preview_customer(self, broadcast: Broadcast) -> Customer | None:
        session = host_session()
        wanted = request.values.get("customer", "").strip()
        if wanted:
            return session.scalar(select(Customer).where(Customer.external_id == wanted))
        inside = select(Membership.customer_id).where(
            Membership.segment_id.in_(broadcast.segment_ids or [])
        )
        return session.scalar(
            select(Customer).where(Customer.id.in_(inside)).order_by(Customer.id).limit(1)
        )

    @staticmethod
    def _render(broadcast: Broadcast, customer: Customer) -> Any:
        composed = compose(
            customer, get_channel(broadcast.channel), broadcast.subject, broadcast.body
        )
        return composed.rendered, composed.unsubscribe_url

    @expose("/<int:broadcast_id>")
    def details(self, broadcast_id: int) -> Any:
        session = host_session()
        broadcast = self._get(broadcast_id)
        customer = self._preview_customer(broadcast)
        preview = preview_error = None
        if customer is not None:
            try:
                preview, _ = self._render(broadcast, customer)
            except EngageError as exc:
                preview_error = str(exc)
        after = request.args.get("after", type=int)
        query = (
            select(Message)
            .where(Message.broadcast_id == broadcast.id)
            .order_by(Message.id)
            .limit(PAGE + 1)
        )
        if after:
            query = query.where(Message.id > after)
        messages = list(session.scalars(query))
        more = len(messages) > PAGE
        messages = messages[:PAGE]
        return self.render(
            "engage_admin/broadcast.html",
            broadcast=broadcast,
            counts=_engage().broadcast_counts(broadcast.id),
            segment_names=segment_names(session, broadcast),
            customer=customer,
            preview=preview,
            preview_error=preview_error,
            messages=messages,
            next_after=messages[-1].id if more else None,
        )

    @expose("/<int:broadcast_id>/counts")
    def counts(self, broadcast_id: int) -> Any:
        broadcast = self._get(broadcast_id)
        return jsonify(status=broadcast.status, counts=_engage().broadcast_counts(broadcast.id))

    @expose("/<int:broadcast_id>/send", methods=("POST",))
    def send(self, broadcast_id: int) -> Any:
        try:
            broadcast = _engage().send_broadcast(self._get(broadcast_id).id)
        except EngageError as exc:
            flash(str(exc), "error")
        else:
            flash(f"Broadcast {broadcast.name!r} is {broadcast.status}.", "success")
        return self.back("details", broadcast_id=broadcast_id)

    @expose("/<int:broadcast_id>/cancel", methods=("POST",))
    def cancel(self, broadcast_id: int) -> Any:
        try:
            broadcast = _engage().cancel_broadcast(self._get(broadcast_id).id)
        except EngageError as exc:
            flash(str(exc), "error")
        else:
            flash(f"Broadcast {broadcast.name!r} cancelled.", "success")
        return self.back("details", broadcast_id=broadcast_id)

    @expose("/<int:broadcast_id>/test", methods=("POST",))
    def test(self, broadcast_id: int) -> Any:
        broadcast = self._get(broadcast_id)
        address = request.form.get("email", "").strip()
        if "@" not in address or "\n" in address or " " in address:
            flash("email: enter the address to send the test to", "error")
            return self.back("details", broadcast_id=broadcast_id), 400
        customer = self._preview_customer(broadcast) or Customer(
            external_id="test", email=address, attributes={}
        )
        try:
            rendered, unsubscribe_url = self._render(broadcast, customer)
            rendered.subject = f"[Test] {rendered.subject or broadcast.name}"
            message = build(customer, rendered, unsubscribe_url)
            message.recipients = [address]
            current_app.extensions["mail"].send(message)
        except EngageError as exc:
            flash(str(exc), "error")
        else:
            flash(f"Test sent to {address}.", "success")
        return self.back("details", broadcast_id=broadcast_id)


def step_summary(step: dict[str, Any]) -> str:
    """One line describing an automation step."""
    ((kind, spec),) = step.items()
    if kind == "wait":
        if "until" in spec:
            return f"Wait until {spec['until']}"
        return "Wait " + ", ".join(f"{amount:g} {unit}" for unit, amount in spec.items())
    if kind == "if":
        return f"Continue only if the customer matches {json.dumps(spec)}"
    if kind == "send":
        subject = f": {spec['subject']!r}" if spec.get("subject") else ""
        return f"Send {spec['channel']}{subject}"
    return "Exit"


class AutomationsView(EngageViewMixin, BaseView):
    """Automations: trigger + JSON steps, readable summary, activate/pause, stats."""

    @expose("/")
    def index(self) -> Any:
        session = host_session()
        automations = session.scalars(select(Automation).order_by(Automation.id.desc())).all()
        names = dict(session.execute(select(Segment.id, Segment.name)).all())
        return self.render("engage_admin/automations.html", automations=automations, names=names)

    def _form(
        self, automation: Automation | None, status: int = 200, error_field: str | None = None
    ) -> Any:
        segments = (
            host_session()
            .scalars(select(Segment).order_by(Segment.is_default.desc(), Segment.name))
            .all()
        )
        form = (
            request.form
            if request.method == "POST"
            else {
                "name": automation.name if automation else "",
                "trigger_kind": automation.trigger_kind if automation else "joins",
                "segment": str(automation.trigger_segment_id) if automation else "",
                "steps": json.dumps(
                    automation.steps
                    if automation
                    else [
                        {
                            "send": {
                                "channel": "email",
                                "subject": "Welcome, {{ customer.name }}",
                                "body": "Hello!",
                            }
                        }
                    ],
                    indent=2,
                ),
                "active": "on" if (automation is None or automation.active) else "",
                "reentry": "on" if automation and automation.reentry else "",
                "exit_on_leave": "on" if automation and automation.exit_on_leave else "",
            }
        )
        return self.render(
            "engage_admin/automation_form.html",
            automation=automation,
            segments=segments,
            form=form,
            error_field=error_field,
        ), status

    @expose("/new", methods=("GET", "POST"))
    def new(self) -> Any:
        return self._form(None) if request.method == "GET" else self._save(None)

    @expose("/<int:automation_id>/edit", methods=("GET", "POST"))
    def edit(self, automation_id: int) -> Any:
        automation = self._get(automation_id)
        return self._form(automation) if request.method == "GET" else self._save(automation)

    def _save(self, automation: Automation | None) -> Any:
        form = request.form
        try:
            steps = json.loads(form.get("steps", ""))
        except ValueError as exc:
            flash(f"steps: not valid JSON ({exc})", "error")
            return self._form(automation, 400, "steps")
        segment = form.get("segment", "")
        fields = {
            "trigger": {
                form.get("trigger_kind", "joins"): int(segment) if segment.isdigit() else segment
            },
            "steps": steps,
            "active": form.get("active") == "on",
            "reentry": form.get("reentry") == "on",
            "exit_on_leave": form.get("exit_on_leave") == "on",
        }
        try:
            if automation is None:
                saved = _engage().create_automation(form.get("name", ""), **fields)
            else:
                saved = _engage().update_automation(
                    automation.id, name=form.get("name", ""), **fields
                )
        except EngageError as exc:
            flash(str(exc), "error")
            return self._form(automation, 400, _error_field(exc))
        flash(f"Automation {saved.name!r} saved.", "success")
        return self.back("details", automation_id=saved.id)

    def _get(self, automation_id: int) -> Automation:
        automation = host_session().get(Automation, automation_id)
        if automation is None:
            abort(404)
        return automation

    @expose("/<int:automation_id>")
    def details(self, automation_id: int) -> Any:
        automation = self._get(automation_id)
        segment = host_session().get(Segment, automation.trigger_segment_id)
        return self.render(
            "engage_admin/automation.html",
            automation=automation,
            segment=segment,
            steps=[step_summary(step) for step in automation.steps],
            stats=_engage().automation_stats(automation.id),
        )

    @expose("/<int:automation_id>/toggle", methods=("POST",))
    def toggle(self, automation_id: int) -> Any:
        automation = self._get(automation_id)
        try:
            saved = _engage().update_automation(automation.id, active=not automation.active)
        except EngageError as exc:
            flash(str(exc), "error")
        else:
            flash(
                f"Automation {saved.name!r} is {'active' if saved.active else 'paused'}.", "success"
            )
        return self.back("details", automation_id=automation_id)

    @expose("/<int:automation_id>/delete", methods=("POST",))
    def delete(self, automation_id: int) -> Any:
        automation = self._get(automation_id)
        _engage().delete_automation(automation.id)
        flash(f"Automation {automation.name!r} deleted; its live runs are cancelled.", "success")
        return redirect(url_for(".index"))
