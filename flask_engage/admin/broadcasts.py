"""Broadcasts: compose and edit drafts, see who will get one (after unsubscribes, each
customer once), preview and test it, and send or schedule it safely: the admin
confirms with the number of recipients, a time in the past is refused, and the
templates are rendered for a sample of recipients first (a failure blocks the send).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from flask import current_app, flash, jsonify, request, url_for
from flask_admin import expose

from ..channels import all_channels, get_channel
from ..channels.email import EmailChannel, build
from ..channels.webhook import WebhookChannel
from ..customers import find_customer
from ..db import host_session
from ..errors import EngageError, ValidationError
from ..lists.service import all_lists, subscriber_counts
from ..messages.audience import (
    Estimate,
    RenderFailure,
    all_broadcasts,
    broadcast_estimate,
    broadcast_messages,
    check_broadcast,
    estimate,
    failure_reasons,
    render_failures,
    sample,
)
from ..messages.broadcasts import archived_list
from ..messages.compose import compose
from ..messages.outcomes import rates_of_broadcasts
from ..models import Broadcast, BroadcastStatus, Customer, CustomerList, Message, utcnow
from ..segments.browse import all_segments
from .base import SMALL_ID, EngageView, engage, found_or_404, payload
from .charts import CHART_DAYS, engagement_chart
from .forms import BroadcastForm, local_time
from .paging import keyset
from .security import wants_json
from .words import explain, plain, who

EDITABLE = (BroadcastStatus.DRAFT, BroadcastStatus.SCHEDULED)
ACTIVE = (BroadcastStatus.QUEUED, BroadcastStatus.SENDING)


class SendBlocked(ValidationError):
    """The templates failed for sampled recipients: nothing is sent."""


def channels_data() -> list[dict[str, Any]]:
    """What the forms show per channel: its label, whether it has a subject, its options."""
    return [
        {
            "name": c.name,
            "label": c.label,
            "needs_subject": c.needs_subject,
            "options": list(c.options),
            #: How a send of it is tested: an email to the admin, or one real request.
            "test": "email"
            if isinstance(c, EmailChannel)
            else "request"
            if isinstance(c, WebhookChannel)
            else None,
        }
        for c in all_channels()
    ]


def channel_fields() -> dict[str, str]:
    """For each field beyond the body, the channels that take it (space-separated names)."""
    channels = all_channels()
    return {
        "subject": " ".join(c.name for c in channels if c.needs_subject),
        "url": " ".join(c.name for c in channels if "url" in c.options),
        "headers": " ".join(c.name for c in channels if "headers" in c.options),
    }


def check_schedule(moment: datetime | None) -> None:
    """Refuse a schedule in the past (it would send at once, which nobody meant)."""
    if moment is not None and moment <= utcnow():
        shown = local_time(moment)
        raise ValidationError(
            f"scheduled_at: {shown:%Y-%m-%d %H:%M} has already passed; choose a later time,"
            " or leave it empty to send now",
            field="scheduled_at",
        )


def blocked(failures: list[RenderFailure], rendered: int) -> SendBlocked:
    """The error that stops a send whose templates failed for sampled recipients."""
    first = failures[0]
    return SendBlocked(
        f"body: the message could not be written for {len(failures)} of {rendered} sampled"
        f" recipients, so nothing was sent. For {who(first.customer)}: {first.error}",
        field="body",
    )


def group_failures(failures: list[RenderFailure], shown: int = 3) -> list[dict[str, Any]]:
    """Render failures by error, in plain words, with a few of the customers each hit."""
    groups: dict[str, list[str]] = {}
    for failure in failures:
        groups.setdefault(plain(failure.error), []).append(who(failure.customer))
    return [
        {"plain": words, "customers": names[:shown], "more": max(len(names) - shown, 0)}
        for words, names in groups.items()
    ]


def estimate_json(found: Estimate) -> dict[str, Any]:
    """An :class:`Estimate` as the confirmation dialog shows it."""
    return {
        "customers": found.customers,
        "no_address": found.no_address,
        "unsubscribed": found.unsubscribed,
        "send_to_unsubscribed": found.send_to_unsubscribed,
        "recipients": found.recipients,
    }


def audience_lists(chosen: Iterable[int] = ()) -> list[tuple[CustomerList, int]]:
    """The open lists a broadcast may go to, with their subscribers, for the form, and
    the ``chosen`` ones archived since (shown, so the form names them)."""
    session = host_session()
    keep = set(chosen)
    lists = [
        found
        for found in all_lists(session, archived=bool(keep))
        if found.archived_at is None or found.id in keep
    ]
    counts = subscriber_counts(session, [found.id for found in lists])
    return [(found, counts.get(found.id, 0)) for found in lists]


def audience_words(segment_ids: list[int], list_ids: list[int]) -> str:
    """Where a broadcast's customers are, in words: "in its segments", "on its lists"..."""
    if not list_ids:
        return "in its segments"
    return "in its segments and lists" if segment_ids else "on its lists"


def wanted_id(name: str) -> list[int]:
    """A segment or list to preselect from the query string (``?segment=3``)."""
    wanted = request.args.get(name, "")
    return [int(wanted)] if wanted.isdigit() and len(wanted) < 10 else []


class BroadcastsView(EngageView):
    """Broadcasts: compose, edit, preview, test, check, send or schedule, cancel, progress."""

    @expose("/")
    def index(self) -> Any:
        page = keyset(
            host_session(),
            all_broadcasts(),
            Broadcast.id,
            cursor="before",
            descending=True,
        )
        outcomes = rates_of_broadcasts(host_session(), [b.id for b in page.rows])
        return self.render("engage_admin/broadcasts.html", page=page, outcomes=outcomes)

    # -- compose and edit -------------------------------------------------------------------
    def _form_page(
        self, form: BroadcastForm, broadcast: Broadcast | None, status: int = 200, error: Any = None
    ) -> Any:
        return self.render(
            "engage_admin/broadcast_form.html",
            form=form,
            broadcast=broadcast,
            channels=channels_data(),
            takes=channel_fields(),
            error=explain(error) if error else None,
            error_field=getattr(error, "field", None),
            check_url=url_for(".check"),
        ), status

    @expose("/new", methods=("GET", "POST"))
    def new(self) -> Any:
        segments, lists = all_segments(host_session()), audience_lists()
        if request.method == "GET":
            form = BroadcastForm(segments=segments, lists=lists)
            form.segments.data = wanted_id("segment")
            form.lists.data = wanted_id("list")
            form.channel.data = all_channels()[0].name
            return self._form_page(form, None)
        form = BroadcastForm(request.form, segments=segments, lists=lists)
        try:
            form.check()
            fields = form.fields()
            check_schedule(fields["scheduled_at"])
            broadcast = engage().create_broadcast((form.name.data or ""), **fields)
        except EngageError as exc:
            host_session().rollback()
            if wants_json():
                raise
            flash(explain(exc), "error")
            return self._form_page(form, None, 400, exc)
        if wants_json():
            return jsonify(broadcast_links(broadcast))
        if form.action.data == "send":
            return self._send(broadcast)
        flash(f"Draft {broadcast.name!r} saved. Check it below, then send it.", "success")
        return self.back("details", broadcast_id=broadcast.id)

    @expose(f"/<{SMALL_ID}:broadcast_id>/edit", methods=("GET", "POST"))
    def edit(self, broadcast_id: int) -> Any:
        broadcast = found_or_404(Broadcast, broadcast_id)
        segments = all_segments(host_session())
        lists = audience_lists(broadcast.list_ids or [])
        if broadcast.status not in EDITABLE:
            flash(
                f"Broadcast {broadcast.name!r} is {broadcast.status}: only drafts and scheduled"
                " broadcasts can be edited.",
                "error",
            )
            return self.back("details", broadcast_id=broadcast.id)
        if request.method == "GET":
            return self._form_page(BroadcastForm.of(broadcast, segments, lists), broadcast)
        form = BroadcastForm(request.form, segments=segments, lists=lists)
        try:
            form.check()
            fields = form.fields()
            check_schedule(fields["scheduled_at"])
            saved = engage().update_broadcast(broadcast.id, name=form.name.data or "", **fields)
        except EngageError as exc:
            host_session().rollback()
            if wants_json():
                raise
            flash(explain(exc), "error")
            return self._form_page(form, broadcast, 400, exc)
        if wants_json():
            return jsonify(broadcast_links(saved))
        flash(f"Broadcast {saved.name!r} saved.", "success")
        return self.back("details", broadcast_id=saved.id)

    # -- look before sending -------------------------------------------------------------------
    @expose("/check", methods=("POST",))
    def check(self) -> Any:
        """Who a draft (saved, or as typed in the form) would reach, and whether its
        templates render for a sample of them (JSON). Nothing is written."""
        body = payload()
        session = host_session()
        if "broadcast_id" in body:
            ref = body["broadcast_id"]
            if not isinstance(ref, int) or isinstance(ref, bool) or not 0 < ref < 2**31:
                raise ValidationError("broadcast_id: expected a broadcast id", field="broadcast_id")
            broadcast = found_or_404(Broadcast, ref)
            segment_ids = list(broadcast.segment_ids or [])
            list_ids = list(broadcast.list_ids or [])
            channel, subject, text = broadcast.channel, broadcast.subject, broadcast.body
            to_unsubscribed, scheduled = broadcast.send_to_unsubscribed, broadcast.scheduled_at
        else:
            data = _form_data(body)
            lists = audience_lists(data["lists"])
            form = BroadcastForm(
                data=data, segments=all_segments(session), lists=lists, meta={"csrf": False}
            )
            form.check()
            fields = form.fields()
            segment_ids, list_ids = fields["segments"], fields["lists"]
            for index, list_id in enumerate(list_ids):
                listed = next(found for found, _ in lists if found.id == list_id)
                if listed.archived_at is not None:
                    raise archived_list(listed, f"lists[{index}]")
            channel = fields["channel"]
            subject, text = fields["subject"], fields["body"]
            to_unsubscribed, scheduled = fields["send_to_unsubscribed"], fields["scheduled_at"]
        kind = get_channel(channel)
        if not segment_ids and not list_ids:
            raise ValidationError("segments: choose at least one segment or list", field="segments")
        check_schedule(scheduled)
        found = estimate(session, segment_ids, channel, to_unsubscribed, list_ids)
        recipients = sample(session, segment_ids, channel, to_unsubscribed, list_ids=list_ids)
        failures = render_failures(kind, subject, text, recipients)
        answer = {
            **estimate_json(found),
            "channel": kind.label,
            "audience": audience_words(segment_ids, list_ids),
            "scheduled_at": None
            if scheduled is None
            else f"{local_time(scheduled):%Y-%m-%d %H:%M}",
            "sampled": len(recipients),
            "failures": group_failures(failures),
            "failed": len(failures),
        }
        if failures:
            answer["blocked"] = (
                f"The message could not be written for {len(failures)} of {len(recipients)}"
                " sampled recipients, so it cannot be sent yet. Fix it first:"
            )
        return jsonify(answer)

    @expose(f"/<{SMALL_ID}:broadcast_id>")
    def details(self, broadcast_id: int) -> Any:
        session = host_session()
        broadcast = found_or_404(Broadcast, broadcast_id)
        customer, preview, preview_error = self._preview(broadcast)
        messages = keyset(session, broadcast_messages(broadcast.id), Message.id)
        counts = engage().broadcast_counts(broadcast.id)
        editable = broadcast.status in EDITABLE
        outcomes = None if editable else engage().broadcast_outcomes(broadcast.id)
        return self.render(
            "engage_admin/broadcast.html",
            broadcast=broadcast,
            counts=counts,
            estimate=broadcast_estimate(session, broadcast)
            if broadcast.status in EDITABLE
            else None,
            segments=[s for s in all_segments(session) if s.id in (broadcast.segment_ids or [])],
            lists=[
                found
                for found in all_lists(session, archived=True)
                if found.id in (broadcast.list_ids or [])
            ],
            audience=audience_words(broadcast.segment_ids or [], broadcast.list_ids or []),
            channel=get_channel(broadcast.channel),
            customer=customer,
            wanted=request.args.get("customer", "").strip()[:200],
            preview=preview,
            preview_error=preview_error,
            messages=messages,
            failures=failure_reasons(session, broadcast.id) if counts.get("failed") else [],
            editable=editable,
            active=broadcast.status in ACTIVE,
            scheduled_local=local_time(broadcast.scheduled_at),
            outcomes=outcomes,
            engagement_chart=None
            if outcomes is None
            else engagement_chart(
                engage().engagement_by_day(broadcast=broadcast.id, days=CHART_DAYS)
            ),
            chart_days=CHART_DAYS,
        )

    def _preview(self, broadcast: Broadcast) -> tuple[Customer | None, Any, str | None]:
        """The customer to preview for (``?customer=`` email, name or id, else the first
        recipient), the rendered message, and the error if it does not render."""
        session = host_session()
        wanted = request.args.get("customer", "").strip()[:200]
        if wanted:
            customer = find_customer(session, wanted)
        else:
            first = sample(
                session,
                broadcast.segment_ids or [],
                broadcast.channel,
                broadcast.send_to_unsubscribed,
                1,
                random=False,
                list_ids=broadcast.list_ids or [],
            )
            customer = first[0] if first else None
        if customer is None:
            return None, None, None
        try:
            composed = compose(
                customer,
                get_channel(broadcast.channel),
                broadcast.subject,
                broadcast.body,
                test=True,
            )
        except EngageError as exc:
            return customer, None, str(exc)
        return customer, composed.rendered, None

    @expose(f"/<{SMALL_ID}:broadcast_id>/counts")
    def counts(self, broadcast_id: int) -> Any:
        broadcast = found_or_404(Broadcast, broadcast_id)
        return jsonify(status=broadcast.status, counts=engage().broadcast_counts(broadcast.id))

    # -- send -----------------------------------------------------------------------------------
    @expose(f"/<{SMALL_ID}:broadcast_id>/send", methods=("POST",))
    def send(self, broadcast_id: int) -> Any:
        return self._send(found_or_404(Broadcast, broadcast_id))

    def _send(self, broadcast: Broadcast) -> Any:
        session = host_session()
        try:
            if broadcast.status in EDITABLE:
                check_schedule(broadcast.scheduled_at)
                rendered, failures = check_broadcast(session, broadcast)
                if failures:
                    raise blocked(failures, rendered)
            result = engage().send_broadcast(broadcast.id)
        except EngageError as exc:
            session.rollback()
            return self.failed(exc, "details", broadcast_id=broadcast.id)
        counts = engage().broadcast_counts(result.id)
        category, message = outcome(result, counts)
        flash(message, category)
        if wants_json():
            return jsonify(status=result.status, counts=counts, message=message, level=category)
        return self.back("details", broadcast_id=result.id)

    @expose(f"/<{SMALL_ID}:broadcast_id>/cancel", methods=("POST",))
    def cancel(self, broadcast_id: int) -> Any:
        try:
            broadcast = engage().cancel_broadcast(found_or_404(Broadcast, broadcast_id).id)
        except EngageError as exc:
            return self.failed(exc, "details", broadcast_id=broadcast_id)
        flash(f"Broadcast {broadcast.name!r} cancelled.", "success")
        return self.back("details", broadcast_id=broadcast_id)

    @expose(f"/<{SMALL_ID}:broadcast_id>/test", methods=("POST",))
    def test(self, broadcast_id: int) -> Any:
        """Send the message to an address of the admin's choosing, written for a customer
        (an email, a name or an id; else the first recipient)."""
        broadcast = found_or_404(Broadcast, broadcast_id)
        address = request.form.get("email", "").strip()
        wanted = request.form.get("customer", "").strip()[:200]
        try:
            if "@" not in address or "\n" in address or " " in address or len(address) > 320:
                raise ValidationError("email: enter the address to send the test to", field="email")
            if not isinstance(get_channel(broadcast.channel), EmailChannel):
                raise ValidationError(
                    "channel: test sends are for email broadcasts", field="channel"
                )
            customer = self._source(broadcast, wanted, address)
            composed = compose(
                customer,
                get_channel(broadcast.channel),
                broadcast.subject,
                broadcast.body,
                test=True,
            )
            composed.rendered.subject = f"[Test] {composed.rendered.subject or broadcast.name}"
            assert composed.unsubscribe_url is not None
            message = build(customer, composed.rendered, composed.unsubscribe_url)
            message.recipients = [address]
            current_app.extensions["mail"].send(message)
        except EngageError as exc:
            flash(explain(exc), "error")
            return self.back("details", broadcast_id=broadcast.id, customer=wanted or None), 400
        flash(f"Test sent to {address}, written for {who(customer)}.", "success")
        return self.back("details", broadcast_id=broadcast.id, customer=wanted or None)

    def _source(self, broadcast: Broadcast, wanted: str, address: str) -> Customer:
        """The customer a test is written for."""
        session = host_session()
        if wanted:
            customer = find_customer(session, wanted)
            if customer is None:
                raise ValidationError(
                    f"customer: no customer with the email, name or id {wanted!r}",
                    field="customer",
                )
            return customer
        first = sample(
            session,
            broadcast.segment_ids or [],
            broadcast.channel,
            broadcast.send_to_unsubscribed,
            1,
            random=False,
            list_ids=broadcast.list_ids or [],
        )
        return first[0] if first else Customer(external_id="test", email=address, attributes={})


def outcome(broadcast: Broadcast, counts: dict[str, int]) -> tuple[str, str]:
    """(flash category, message) saying truthfully what a send did."""
    name, status = broadcast.name, broadcast.status
    if status == BroadcastStatus.SENT:
        skipped = f" ({counts['skipped']} skipped)" if counts.get("skipped") else ""
        return "success", f"Broadcast {name!r} sent to {counts['sent']} customer(s){skipped}."
    if status == BroadcastStatus.PARTIAL:
        return "warning", (
            f"Broadcast {name!r} was partly sent: {counts['sent']} sent, {counts['failed']}"
            " failed. See why below."
        )
    if status == BroadcastStatus.FAILED:
        return "error", (
            f"Broadcast {name!r} failed: none of its {counts['failed']} message(s) could be"
            " sent. See why below."
        )
    if status == BroadcastStatus.SCHEDULED:
        moment = local_time(broadcast.scheduled_at)
        return "success", f"Broadcast {name!r} is scheduled for {moment:%Y-%m-%d %H:%M}."
    return "info", f"Broadcast {name!r} is {status}: follow the progress below."


def broadcast_links(broadcast: Broadcast) -> dict[str, Any]:
    """Where a saved broadcast's page, send and progress are (JSON answers)."""
    return {
        "id": broadcast.id,
        "status": broadcast.status,
        "url": url_for(".details", broadcast_id=broadcast.id),
        "send_url": url_for(".send", broadcast_id=broadcast.id),
        "counts_url": url_for(".counts", broadcast_id=broadcast.id),
    }


def _form_data(body: dict[str, Any]) -> dict[str, Any]:
    """A check request's fields as the broadcast form reads them."""
    data = {key: body.get(key) for key in ("name", "channel", "subject", "body", "url", "headers")}
    for field, kind in (("segments", "segment"), ("lists", "list")):
        ids = body.get(field) or []
        if not isinstance(ids, list):
            raise ValidationError(f"{field}: expected a list of {kind} ids", field=field)
        data[field] = [i for i in ids if isinstance(i, int) and not isinstance(i, bool)]
    data["send_to_unsubscribed"] = bool(body.get("send_to_unsubscribed"))
    when = body.get("scheduled_at")
    if when:
        try:
            data["scheduled_at"] = datetime.fromisoformat(str(when)[:40])
        except ValueError:
            raise ValidationError(
                "scheduled_at: expected a date and time", field="scheduled_at"
            ) from None
    return data
