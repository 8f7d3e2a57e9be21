"""Segments: the list, the visual builder (live count, name and value hints), the
impact of an edit before it is saved, and a segment's members, history and changes."""

from __future__ import annotations

import json
from typing import Any

from flask import flash, jsonify, request, url_for
from flask_admin import expose

from ..customers import count_customers
from ..db import host_session
from ..errors import EngageError, ValidationError
from ..models import Customer, MembershipChange, Segment
from ..segments.browse import (
    all_segments,
    changes,
    common_values,
    members,
    names,
    rebuilt_before,
    value_hint,
)
from ..segments.history import local_day
from .base import SMALL_ID, EngageView, engage, found_or_404, payload
from .charts import line_chart
from .forms import SegmentForm, parse_json
from .paging import keyset
from .words import explain, plain

#: Joins and leaves shown on a segment's page.
CHANGES = 20


def impact_json(impact: Any) -> dict[str, Any]:
    """An :class:`~flask_engage.segments.service.Impact` for the edit dialog."""
    return {
        "joining": impact.joining,
        "leaving": impact.leaving,
        "automations": [
            {
                "name": a.name,
                "trigger": a.trigger,
                "customers": a.customers,
                "segment": a.segment,
                "url": url_for("engage_automations.details", automation_id=a.id),
            }
            for a in impact.automations
        ],
        "segments": [
            {"name": s.name, "joining": s.joining, "leaving": s.leaving} for s in impact.segments
        ],
    }


class SegmentsView(EngageView):
    """Segments: list, the visual builder with a live count, detail with history."""

    @expose("/")
    def index(self) -> Any:
        return self.render("engage_admin/segments.html", segments=all_segments(host_session()))

    def _builder(
        self,
        segment: Segment | None,
        form: SegmentForm,
        status: int = 200,
        error: EngageError | None = None,
        impact: Any = None,
    ) -> Any:
        if not form.filters.data:
            form.filters.data = json.dumps(segment.filters if segment else {"all": []}, indent=2)
        data = {
            **names(host_session()),
            "filters_text": form.filters.data,
            "count_url": url_for(".count"),
            "values_url": url_for(".values"),
            "impact_url": url_for(".impact", segment_id=segment.id) if segment else None,
            "error_field": getattr(error, "field", None) or ("filters" if error else None),
            "error_message": str(error) if error else None,
            "error_plain": plain(str(error)) if error else None,
            "self_slug": segment.slug if segment else None,
            "read_only": bool(segment and segment.is_default),
        }
        return self.render(
            "engage_admin/builder.html",
            segment=segment,
            form=form,
            data=data,
            error=explain(error) if error else None,
            impact=impact_json(impact) if impact else None,
        ), status

    @expose("/new", methods=("GET", "POST"))
    def new(self) -> Any:
        if request.method == "GET":
            return self._builder(None, SegmentForm())
        return self._save(None)

    @expose(f"/<{SMALL_ID}:segment_id>/edit", methods=("GET", "POST"))
    def edit(self, segment_id: int) -> Any:
        segment = found_or_404(Segment, segment_id)
        if request.method == "GET":
            form = SegmentForm(data={"name": segment.name, "description": segment.description})
            return self._builder(segment, form)
        return self._save(segment)

    def _save(self, segment: Segment | None) -> Any:
        form = SegmentForm(request.form)
        name = (form.name.data or "").strip()
        description = (form.description.data or "").strip() or None
        try:
            form.check()
            filters = parse_json(form.filters.data or "", "filters")
            if segment is None:
                saved = engage().create_segment(name, filters, description=description)
            else:
                editable = not segment.is_default
                changed = editable and filters != segment.filters
                if changed and not form.confirmed.data:
                    impact = engage().preview_segment_update(segment.id, filters)
                    if impact.joining or impact.leaving:
                        return self._builder(segment, form, impact=impact)
                saved = engage().update_segment(
                    segment.id,
                    name=name if editable else None,
                    filters=filters if editable else None,
                    description=description,
                    trigger_automations=bool(form.trigger_automations.data),
                )
        except EngageError as exc:
            host_session().rollback()
            flash(explain(exc), "error")
            return self._builder(segment, form, 400, exc)
        note = ""
        if segment is not None and not form.trigger_automations.data:
            note = " Automations were not started for customers who joined or left with this edit."
        flash(f"Segment {saved.name!r} saved: {saved.member_count:,} members.{note}", "success")
        return self.back("details", segment_id=saved.id)

    @expose(f"/<{SMALL_ID}:segment_id>/impact", methods=("POST",))
    def impact(self, segment_id: int) -> Any:
        """What saving the posted filters would change (JSON; nothing is written)."""
        segment = found_or_404(Segment, segment_id)
        body = payload("filters")
        if "filters" not in body:
            raise ValidationError('filters: send a JSON object {"filters": ...}', field="filters")
        if segment.is_default or body["filters"] == segment.filters:
            return jsonify(joining=0, leaving=0, automations=[], unchanged=True)
        try:
            impact = engage().preview_segment_update(segment.id, body["filters"])
        except EngageError:
            host_session().rollback()
            raise
        return jsonify(impact_json(impact))

    @expose("/count", methods=("POST",))
    def count(self) -> Any:
        """The builder's live count (JSON)."""
        body = payload("filters")
        if "filters" not in body:
            raise ValidationError('filters: send a JSON object {"filters": ...}', field="filters")
        session = host_session()
        try:
            matched = engage().count(body["filters"])
        except EngageError:
            session.rollback()
            raise
        total = count_customers(session)
        percent = round(100.0 * matched / total, 1) if total else 0.0
        return jsonify(count=matched, total=total, percent=percent)

    @expose("/values")
    def values(self) -> Any:
        """An attribute's most common values, and how a typed value matches (JSON)."""
        attribute = request.args.get("attribute", "").strip()[:255]
        value = request.args.get("value", "")[:1000]
        if not attribute:
            return jsonify(values=[])
        session = host_session()
        answer: dict[str, Any] = {
            "values": [[v, n] for v, n in common_values(session, attribute)],
        }
        if value:
            hint = value_hint(session, attribute, value)
            answer.update(exact=hint.exact, other_case=[[v, n] for v, n in hint.other_case])
        return jsonify(answer)

    @expose(f"/<{SMALL_ID}:segment_id>")
    def details(self, segment_id: int) -> Any:
        session = host_session()
        segment = found_or_404(Segment, segment_id)
        page = keyset(session, members(segment.id), Customer.id)
        history = engage().segment_history(segment, days=30)
        since = rebuilt_before(segment)
        chart = line_chart(
            [p.date.isoformat() for p in history],
            [p.percent for p in history],
            rebuilt=[p.date < since for p in history],
        )
        recent = keyset(
            session,
            changes(segment.id),
            MembershipChange.id,
            cursor="changes_before",
            descending=True,
            size=CHANGES,
            scalars=False,
            key_of=lambda row: row[0].id,
        )
        return self.render(
            "engage_admin/segment.html",
            segment=segment,
            members=page,
            history=history,
            chart=chart,
            rebuilt=any(p.date < since for p in history),
            created_day=local_day(segment.created_at),
            changes=recent,
            filters_json=json.dumps(segment.filters, indent=2),
        )

    @expose(f"/<{SMALL_ID}:segment_id>/recompute", methods=("POST",))
    def recompute(self, segment_id: int) -> Any:
        segment = found_or_404(Segment, segment_id)
        try:
            outcomes = engage().recompute(segment.id)
        except EngageError as exc:
            return self.failed(exc, "details", segment_id=segment_id)
        for outcome in outcomes:
            if outcome.error:
                flash(explain(f"Recomputing {segment.name} failed: {outcome.error}"), "error")
            else:
                flash(
                    f"Recomputed {segment.name}: {outcome.joined} joined, {outcome.left} left,"
                    f" {outcome.took_ms} ms.",
                    "success",
                )
        return self.back("details", segment_id=segment_id)

    @expose(f"/<{SMALL_ID}:segment_id>/delete", methods=("POST",))
    def delete(self, segment_id: int) -> Any:
        segment = found_or_404(Segment, segment_id)
        try:
            engage().delete_segment(segment.id)
        except EngageError as exc:
            return self.failed(exc, "details", segment_id=segment_id)
        flash(f"Segment {segment.name!r} deleted.", "success")
        return self.back("index")
