"""The ``Engage`` extension object: configuration, wiring, and the Python API."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import Flask, make_response
from flask_mail import Mail
from sqlalchemy import inspect, select
from sqlalchemy.orm import Query, Session

from . import customers, hooks, jobs, operations, tracking
from .admin import init_admin
from .automations import retry_parked_runs
from .automations import service as automation_service
from .blueprints import register_blueprints
from .cli import engage_cli
from .config import apply_defaults, startup_warnings, unknown_keys
from .db import EngageState, get_state, host_session, log, operation_session
from .errors import ConfigurationError, NotFound, StateError, ValidationError
from .lists import members as list_members_module
from .lists import optin as list_optin
from .lists import service as list_service
from .merge import merge_customers
from .messages import broadcasts as broadcast_service
from .messages import outcomes
from .messages.unsubscribe import set_subscription
from .messages.urls import check_link_base
from .migrations import skip_in_host_autogenerate
from .models import (
    Automation,
    Broadcast,
    Customer,
    CustomerList,
    Event,
    Segment,
    metadata,
    utcnow,
)
from .segments import history as segment_history_module
from .segments import service as segment_service
from .segments.membership import Outcome
from .segments.service import Impact
from .status import collect_status
from .tracking import CustomerPatch
from .values import as_aware, row_id

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy


class Engage:
    """Customer data, segments, messages and automations inside a Flask app.

    ``Engage(app, db=db)`` or ``engage = Engage()`` then ``engage.init_app(app, db=db)``.
    """

    def __init__(self, app: Flask | None = None, *, db: SQLAlchemy | None = None) -> None:
        self._states: weakref.WeakKeyDictionary[Flask, EngageState] = weakref.WeakKeyDictionary()
        self._tracked: dict[type, tracking.TrackedModel] = {}
        if app is not None:
            self.init_app(app, db=db)

    # -- setup -------------------------------------------------------------------------
    def init_app(self, app: Flask, *, db: SQLAlchemy | None = None) -> None:
        """Register Engage on ``app``: config defaults, session hooks, blueprint, admin, CLI."""
        if "engage" in app.extensions:
            raise RuntimeError("Engage is already registered on this app")
        if db is None:
            db = app.extensions.get("sqlalchemy")
        if db is None:
            raise ConfigurationError("init_app needs db=SQLAlchemy(...) (Flask-SQLAlchemy)")
        apply_defaults(app.config)
        for key in unknown_keys(app.config):
            log.warning("flask-engage: unknown setting %s is ignored", key)
        for note in startup_warnings(app.config):
            log.warning("flask-engage: %s", note)
        check_link_base(app)
        app.extensions["engage"] = self
        self._states[app] = EngageState(extension=self, db=db, after_commit=operations.after_commit)
        hooks.install()
        if "mail" not in app.extensions:
            Mail(app)
        register_blueprints(app)
        app.cli.add_command(engage_cli)
        init_admin(app)
        skip_in_host_autogenerate(app)
        jobs.schedule.install_inline_schedule(app)

    @property
    def metadata(self):
        """Engage's own ``MetaData`` (all tables named ``engage_*``)."""
        return metadata

    def create_all(self) -> None:
        """Create Engage's tables and the default segment (tests, demos)."""
        state = get_state()
        metadata.create_all(state.db.engine)
        with operation_session() as session:
            segment_service.ensure_default(session)

    def drop_all(self) -> None:
        """Drop Engage's tables."""
        metadata.drop_all(get_state().db.engine)

    # -- data in -----------------------------------------------------------------------
    def identify(
        self,
        customer_id: int | str,
        *,
        email: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        **attrs: Any,
    ) -> Customer:
        """Create or update a customer; attributes merge, ``None`` removes one.

        Written in the host's transaction: commit ``db.session`` to keep it.
        """
        return tracking.identify(customer_id, email=email, attributes=attributes, **attrs)

    def track(
        self,
        customer_id: int | str,
        event: str,
        properties: Mapping[str, Any] | None = None,
        *,
        timestamp: datetime | str | None = None,
    ) -> Event:
        """Record an event (an unknown customer is created), in the host's transaction."""
        return tracking.track(customer_id, event, properties, timestamp=timestamp)

    def track_model(
        self,
        model: type | None = None,
        *,
        customer_id: str | Callable[[Any], Any] = "id",
        email: str | Callable[[Any], Any] | None = None,
        attributes: Iterable[str] | Mapping[str, str | Callable[[Any], Any]] = (),
        events: Mapping[str, str] | None = None,
        changes: Mapping[str, str] | None = None,
        properties: Iterable[str] = (),
        customer_prefix: str | None = None,
        on_delete: str | None = None,
    ) -> Any:
        """Follow a host model: attributes copied, created/deleted/changed events recorded.

        Usable as ``engage.track_model(User, ...)`` or as a class decorator
        ``@engage.track_model(attributes=["plan"])``. Values that cannot be stored are
        converted or dropped with a warning naming the model and column; the host's
        commit goes on. ORM bulk ``update()``/``delete()`` statements are tracked too.

        ``customer_prefix``: put before this model's customer ids (``"partner:"``);
        a second model that gives customer ids must say it (``""``: the same ids).
        ``on_delete``: ``"forget"`` erases the customer with the row, ``"keep"`` keeps
        its history but takes it out of every segment and send. Default: ``"forget"``
        for a model whose primary key is the customer id, ``"keep"`` when it names a
        ``deleted`` event, nothing for other models.
        """

        def register(cls: type) -> type:
            spec = tracking.TrackedModel.build(
                cls,
                customer_id=customer_id,
                email=email,
                attributes=attributes,
                events=events,
                changes=changes,
                properties=properties,
                customer_prefix=customer_prefix,
                on_delete=on_delete,
            )
            tracking.check_namespaces(self._tracked, spec)
            self._tracked[cls] = spec
            hooks.follow_changes(cls, list(spec.changes))
            return cls

        return register if model is None else register(model)

    def track_view(
        self, event: str, properties: Mapping[str, Any] | Callable[[], Any] | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """View decorator: record ``event`` for the current identity when the view
        answers below 400.

        The identity is read before the view runs (so a logout view is recorded),
        or after it when there was none (a login view). The event is written and
        committed in a transaction of Engage's own: whatever the view left pending in
        the host's session is neither committed nor rolled back.
        """

        def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(view)
            def wrapped(*args: Any, **kwargs: Any) -> Any:
                before = tracking.current_identity()
                response = make_response(view(*args, **kwargs))
                if response.status_code >= 400:
                    return response
                customer_id = before if before is not None else tracking.current_identity()
                if customer_id is None:
                    return response
                try:
                    props = properties() if callable(properties) else properties
                    item = tracking.check_event(customer_id, event, props, None)
                    with operation_session() as session:
                        tracking.store(session, {}, [item])
                except Exception:
                    log.exception("flask-engage: track_view(%r) failed", event)
                return response

            return wrapped

        return decorator

    def current_identity(self) -> str | None:
        """The customer id of the current request (``ENGAGE_IDENTITY`` or Flask-Login)."""
        return tracking.current_identity()

    def get_customer(self, customer_id: int | str) -> Customer | None:
        """The customer with this host id, or None; a read that writes nothing.

        A customer whose host row was deleted under ``on_delete="keep"`` is returned
        with ``deleted_at`` set.
        """
        return customers.get_customer(host_session(), customer_id)

    def forget(self, customer_id: int | str) -> dict[str, int]:
        """Erase a customer: the customer, events, memberships, subscriptions, runs and
        push subscriptions. Messages stay for counts, without customer or content.

        Written in the host's transaction: commit ``db.session`` to keep it. Returns
        what was erased (all zeros for an unknown id).
        """
        external_id = tracking.check_customer_id(customer_id)
        return customers.forget(host_session(), [external_id]).as_dict()

    def forget_preview(self, customer_id: int | str) -> dict[str, int] | None:
        """What :meth:`forget` would erase (for a confirmation), or None for an unknown id."""
        preview = customers.erasure_preview(host_session(), customer_id)
        return None if preview is None else preview.as_dict()

    def merge(self, source_id: int | str, destination_id: int | str) -> Customer:
        """Move a customer's events, attributes and subscriptions onto another; delete it."""
        return merge_customers(source_id, destination_id)

    # -- segments ----------------------------------------------------------------------
    def create_segment(self, name: str, filters: Any, *, description: str | None = None) -> Segment:
        """Create a segment and compute its members."""
        with operation_session() as session:
            segment = segment_service.create_segment(session, name, filters, description)
        self._refresh(segment)
        return segment

    def update_segment(
        self,
        segment: Segment | int | str,
        *,
        name: str | None = None,
        filters: Any = None,
        description: str | None = None,
        trigger_automations: bool = False,
    ) -> Segment:
        """Rename, re-describe or re-filter a segment (members are recomputed).

        Customers who join or leave because the filters changed start the segment's
        automations (and those of segments that refer to it, which are recomputed
        with it) only with ``trigger_automations=True``; joins and leaves caused
        later by data or time always do. :meth:`preview_segment_update` tells how
        many that would be.
        """
        with operation_session() as session:
            found = self._segment(session, segment)
            changed = segment_service.update_segment(
                session, found, name=name, filters=filters, description=description
            )
            followers = (
                [s.id for s in segment_service.dependent_segments(session, found)]
                if changed
                else []
            )
        if changed:
            self._refresh(found, trigger=trigger_automations)
            # segments built on this one change with it, under the same rule
            for follower in followers:
                operations.refresh_segment(follower, trigger=trigger_automations)
        return found

    def preview_segment_update(
        self, segment: Segment | int | str, filters: Any, *, now: datetime | None = None
    ) -> Impact:
        """What ``update_segment(segment, filters=filters)`` would change, without
        writing: how many customers join and leave, and which automations would
        start for how many of them if asked to (``trigger_automations=True``)."""
        with operation_session() as session:
            found = self._segment(session, segment)
            return segment_service.preview_impact(session, found, filters, _moment(now))

    def delete_segment(self, segment: Segment | int | str) -> None:
        """Delete a segment (not ``All``, not one still used)."""
        with operation_session() as session:
            segment_service.delete_segment(session, self._segment(session, segment))

    def get_segment(self, id_or_slug: int | str) -> Segment | None:
        """A segment by id or slug, or None."""
        self._ensure_default()
        return segment_service.find_segment(host_session(), id_or_slug)

    def segments(self) -> list[Segment]:
        """All segments, the default first."""
        self._ensure_default()
        return list(
            host_session().scalars(
                select(Segment).order_by(Segment.is_default.desc(), Segment.name)
            )
        )

    def count(self, filters: Any, *, now: datetime | None = None) -> int:
        """How many customers match ``filters`` (as of ``now``; naive means UTC)."""
        return segment_service.count(host_session(), filters, _moment(now))

    def members(self, segment: Segment | int | str) -> Query[Customer]:
        """A query of the segment's current customers."""
        return segment_service.members(host_session(), self._segment(host_session(), segment))

    def recompute(
        self, segment: Segment | int | str | None = None, *, now: datetime | None = None
    ) -> list[Outcome]:
        """Re-evaluate one segment or all, now; commits, and in inline mode finishes
        what the changes trigger (automation steps, sends)."""
        now = _moment(now)
        self._ensure_default()
        known = segment.id if isinstance(segment, Segment) else None
        if isinstance(segment, int) and not isinstance(segment, bool):
            known = row_id(segment) or 0  # 0: no such row (the lookup below would say so)
        if known is not None:  # no lookup: recompute_one finds (and locks) the row
            ids = [known]
        else:
            with operation_session() as session:
                if segment is None:
                    ids = list(session.scalars(select(Segment.id).order_by(Segment.id)))
                else:
                    ids = [self._segment(session, segment).id]
        outcomes = [jobs.recompute_one(segment_id, now) for segment_id in ids]
        if known is not None and outcomes[0] is None:
            raise NotFound(f"segment: no segment {segment!r}")
        if any(o is not None and o.computation for o in outcomes):
            # Only changes start automation runs (and their sends): a recompute that
            # changed nothing has nothing to finish.
            operations.finish(now)
        return [o for o in outcomes if o is not None]

    def segment_history(self, segment: Segment | int | str, days: int = 30) -> list[Any]:
        """Oldest first, one point per day (``date``, ``members``, ``total``, ``percent``)."""
        if not isinstance(days, int) or days < 1 or days > 3660:
            raise ValidationError("days: expected a whole number from 1 to 3660", field="days")
        with operation_session() as session:
            return segment_history_module.segment_history(
                session, self._segment(session, segment), days, utcnow()
            )

    # -- lists -------------------------------------------------------------------------
    def create_list(
        self,
        name: str,
        *,
        description: str | None = None,
        double_optin: bool = False,
        redirect_url: str | None = None,
        public: bool = False,
    ) -> CustomerList:
        """Create a list people join by hand (slug from the name, as for segments).

        ``public``: anyone may subscribe through its public form
        (``<prefix>/lists/<slug>/subscribe``). ``double_optin``: people who subscribe
        there are pending until they confirm the link emailed to them.
        ``redirect_url``: where the form (or the confirmation) sends them afterwards.
        """
        with operation_session() as session:
            return list_service.create_list(
                session,
                name,
                description=description,
                public=public,
                double_optin=double_optin,
                redirect_url=redirect_url,
            )

    def update_list(
        self,
        customer_list: CustomerList | int | str,
        *,
        name: str | None = None,
        description: str | None = None,
        double_optin: bool | None = None,
        redirect_url: str | None = None,
        public: bool | None = None,
    ) -> CustomerList:
        """Change a list (``None`` leaves a field; ``""`` clears a description or URL).

        A new name brings a new slug; segment filters naming the old slug follow it.
        """
        with operation_session() as session:
            return list_service.update_list(
                session,
                list_service.get_list(session, customer_list),
                name=name,
                description=description,
                public=public,
                double_optin=double_optin,
                redirect_url=redirect_url,
            )

    def archive_list(
        self, customer_list: CustomerList | int | str, *, archived: bool = True
    ) -> CustomerList:
        """Archive a list: it takes no new subscribers, its members stay (``archived=False``
        brings it back). Refused while a scheduled or sending broadcast or an active
        automation uses it."""
        with operation_session() as session:
            return list_service.archive_list(
                session, list_service.get_list(session, customer_list), archived=archived
            )

    def delete_list(self, customer_list: CustomerList | int | str) -> None:
        """Delete a list and its members; refused while a segment filter, an automation
        or an unsent broadcast uses it."""
        with operation_session() as session:
            list_service.delete_list(session, list_service.get_list(session, customer_list))

    def get_list(self, id_or_slug: int | str) -> CustomerList | None:
        """A list by id or slug, or None."""
        return list_service.find_list(host_session(), id_or_slug)

    def lists(self, *, archived: bool = False) -> list[CustomerList]:
        """All lists by name (archived ones only when asked)."""
        return list_service.all_lists(host_session(), archived=archived)

    def add_to_list(self, customer_list: CustomerList | int | str, customer_id: int | str) -> bool:
        """Subscribe a customer (the host's id; an unknown one is created) to a list.

        True when this subscribed them (also from pending or unsubscribed); False when
        they already were. Written in the host's transaction: commit ``db.session`` to
        keep it; then the automations it triggers start and their segments follow.
        """
        session = host_session()
        found = list_service.open_list(session, customer_list)
        external_id = tracking.check_customer_id(customer_id)
        ids = list_members_module.ensure_customers(
            session, {external_id: CustomerPatch(restore=False)}
        )
        return bool(list_members_module.subscribe(session, found.id, [ids[external_id]]))

    def remove_from_list(
        self, customer_list: CustomerList | int | str, customer_id: int | str
    ) -> bool:
        """Take a customer off a list, whatever their status; True when they were on it.
        In the host's transaction, like :meth:`add_to_list`."""
        session = host_session()
        found = list_service.get_list(session, customer_list)
        customer = customers.get_customer(session, customer_id)
        if customer is None:
            return False
        return list_members_module.remove(session, found.id, [customer.id]) > 0

    def unsubscribe_from_list(
        self, customer_list: CustomerList | int | str, customer_id: int | str
    ) -> bool:
        """Mark a customer as unsubscribed from one list (an import will not add them
        back; their channel subscriptions stay). True when they were subscribed. In
        the host's transaction, like :meth:`add_to_list`."""
        session = host_session()
        found = list_service.get_list(session, customer_list)
        customer = customers.get_customer(session, customer_id)
        if customer is None:
            return False
        return bool(list_members_module.unsubscribe(session, found.id, [customer.id]))

    def list_members(self, customer_list: CustomerList | int | str) -> Query[Customer]:
        """A query of the list's subscribed customers (not pending, not unsubscribed)."""
        session = host_session()
        return list_members_module.members(session, list_service.get_list(session, customer_list))

    def list_counts(self, customer_list: CustomerList | int | str) -> dict[str, int]:
        """Members per status: ``subscribed``, ``pending``, ``unsubscribed``."""
        session = host_session()
        return list_members_module.status_counts(
            session, list_service.get_list(session, customer_list)
        )

    def list_history(self, customer_list: CustomerList | int | str, days: int = 30) -> list[Any]:
        """Oldest first, one point per day (``date``, ``subscribers``); the last is now."""
        if not isinstance(days, int) or days < 1 or days > 3660:
            raise ValidationError("days: expected a whole number from 1 to 3660", field="days")
        session = host_session()
        return list_members_module.history(
            session, list_service.get_list(session, customer_list), days, utcnow()
        )

    def list_form(self, customer_list: CustomerList | int | str) -> str:
        """An HTML form to paste into any page, posting to the list's public
        subscribe endpoint (the list must be ``public``)."""
        found = list_service.get_list(host_session(), customer_list)
        if not found.public:
            raise StateError(f"list {found.name!r} is not public: it has no subscribe form")
        return str(list_optin.form_snippet(found))

    def list_unsubscribe_url(
        self, customer_list: CustomerList | int | str, customer_id: int | str
    ) -> str:
        """A customer's signed link to leave one list (for your own templates)."""
        session = host_session()
        found = list_service.get_list(session, customer_list)
        customer = customers.get_customer(session, customer_id)
        if customer is None:
            raise NotFound(f"customer: no customer {customer_id!r}")
        return list_optin.unsubscribe_url(found, customer.id)

    # -- messages ----------------------------------------------------------------------
    def unsubscribe(self, customer_id: int | str, channel: str = "email") -> None:
        """Opt a customer out of a channel (they stay in their segments)."""
        set_subscription(customer_id, channel, subscribed=False)

    def resubscribe(self, customer_id: int | str, channel: str = "email") -> None:
        """Undo an unsubscribe."""
        set_subscription(customer_id, channel, subscribed=True)

    def create_broadcast(
        self,
        name: str,
        *,
        channel: str,
        segments: Iterable[Segment | int | str] = (),
        lists: Iterable[CustomerList | int | str] = (),
        subject: str | None = None,
        body: str,
        send_to_unsubscribed: bool = False,
        scheduled_at: datetime | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Broadcast:
        """Create a broadcast draft (validated, templates checked) to the members of
        ``segments`` and the subscribers of ``lists`` (at least one of the two): one
        message per customer across all of them.

        ``options`` are the channel's own settings, e.g. a webhook's
        ``{"url": ..., "headers": {...}}``.
        """
        with operation_session() as session:
            return broadcast_service.create_broadcast(
                session,
                name,
                channel=channel,
                segments=list(segments),
                lists=list(lists),
                subject=subject,
                body=body,
                send_to_unsubscribed=send_to_unsubscribed,
                scheduled_at=None
                if scheduled_at is None
                else as_aware(scheduled_at, "scheduled_at"),
                options=options,
            )

    def update_broadcast(self, broadcast: Broadcast | int, **changes: Any) -> Broadcast:
        """Change a draft or scheduled broadcast (``name``, ``channel``, ``segments``,
        ``subject``, ``body``, ``send_to_unsubscribed``, ``scheduled_at``, ``options``),
        checked as ``create_broadcast`` checks them."""
        if changes.get("scheduled_at") is not None:
            changes["scheduled_at"] = as_aware(changes["scheduled_at"], "scheduled_at")
        if "segments" in changes:
            changes["segments"] = list(changes["segments"])
        with operation_session() as session:
            return broadcast_service.update_broadcast(session, _id(broadcast), **changes)

    def send_broadcast(
        self, broadcast: Broadcast | int, *, now: datetime | None = None
    ) -> Broadcast:
        """Queue a broadcast (or schedule it if ``scheduled_at`` is in the future).

        Sending one that is already queued, sending or sent does nothing. Returns
        the broadcast as it is after the call (inline mode: already sent).
        """
        broadcast_id = broadcast.id if isinstance(broadcast, Broadcast) else broadcast
        with operation_session() as session:
            broadcast_service.request_send(session, broadcast_id, _moment(now))
        with operation_session() as session:
            result = session.get(Broadcast, broadcast_id)
        assert result is not None
        if isinstance(broadcast, Broadcast):
            _refresh_instance(broadcast, result, ("status", "started_at", "finished_at"))
        return result

    def cancel_broadcast(self, broadcast: Broadcast | int) -> Broadcast:
        """Cancel a draft or scheduled broadcast (a send in progress stops)."""
        with operation_session() as session:
            return broadcast_service.cancel(session, _id(broadcast))

    def broadcast_counts(self, broadcast: Broadcast | int) -> dict[str, int]:
        """Messages of a broadcast by status and skip reason, and the customers who
        ``opened`` and ``clicked`` it."""
        with operation_session() as session:
            return broadcast_service.counts(session, _id(broadcast))

    def broadcast_outcomes(self, broadcast: Broadcast | int) -> dict[str, Any]:
        """Sent, failed, skipped, opened, clicked (by people and machines) and
        unsubscribed after it, with ``rates`` in percent of the messages sent."""
        with operation_session() as session:
            return outcomes.broadcast_outcomes(session, _id(broadcast))

    def engagement_by_day(
        self,
        *,
        broadcast: Broadcast | int | None = None,
        automation: Automation | int | None = None,
        days: int = 7,
    ) -> list[dict[str, int]]:
        """First opens and clicks per day after sending (day 0 is the day each message
        was sent), for one broadcast or automation: a chart's points."""
        if (broadcast is None) == (automation is None):
            raise ValidationError("broadcast: give a broadcast or an automation", field="broadcast")
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 365:
            raise ValidationError("days: expected a whole number from 1 to 365", field="days")
        with operation_session() as session:
            return outcomes.engagement_by_day(
                session,
                broadcast_id=None if broadcast is None else _id(broadcast),
                automation_id=None if automation is None else _id(automation),
                days=days,
            )

    # -- automations -------------------------------------------------------------------
    def create_automation(
        self,
        name: str,
        *,
        trigger: Mapping[str, Any],
        steps: list[dict[str, Any]],
        active: bool = True,
        reentry: bool = False,
        exit_on_leave: bool = False,
    ) -> Automation:
        """Create an automation started when a customer joins or leaves a segment
        (``{"joins": segment}``, ``{"leaves": segment}``), subscribes to or unsubscribes
        from a list (``{"subscribes": list}``, ``{"unsubscribes": list}``), or records an
        event (``{"event": name, "where": [...]}``)."""
        with operation_session() as session:
            return automation_service.create_automation(
                session,
                name,
                trigger=trigger,
                steps=steps,
                active=active,
                reentry=reentry,
                exit_on_leave=exit_on_leave,
            )

    def update_automation(self, automation: Automation | int, **changes: Any) -> Automation:
        """Change an automation (``active=False`` pauses it: its runs are held)."""
        with operation_session() as session:
            found = self._automation(session, automation)
            return automation_service.update_automation(session, found, **changes)

    def delete_automation(self, automation: Automation | int) -> None:
        """Delete an automation; its live runs are cancelled."""
        with operation_session() as session:
            automation_service.delete_automation(session, self._automation(session, automation))

    def automation_stats(self, automation: Automation | int) -> dict[str, Any]:
        """Runs by status, messages per step, the steps' outline and each send step's
        outcomes with rates (``outcomes_by_step``)."""
        with operation_session() as session:
            return automation_service.automation_stats(
                session, self._automation(session, automation)
            )

    # -- jobs --------------------------------------------------------------------------
    def run_due(self, now: datetime | None = None) -> dict[str, int]:
        """Run whatever is due by ``now`` (waits, scheduled broadcasts, time-based
        segments, snapshots, outbox leftovers)."""
        return jobs.run_due(_moment(now))

    def work(self, burst: bool = False, **options: Any) -> bool:
        """Run an RQ SimpleWorker for Engage's queue in this process, and the schedule.

        ``options``: ``queues``, ``name``, ``log_level``, ``max_jobs`` (see
        ``flask engage worker --help``).
        """
        return jobs.work(burst=burst, **options)

    def retry_parked(self) -> int:
        """Give parked work a new start: outbox items and automation runs that kept
        failing (``status()["parked"]``). Returns how many were retried."""
        items = jobs.retry_parked()
        with operation_session() as session:
            runs = retry_parked_runs(session, utcnow())
        if runs:
            operations.finish()
        return items + runs

    def status(self) -> dict[str, Any]:
        """Operational facts: ``last_tick``, ``schedule_ok``, ``outbox``, ``parked``,
        the queue, failing segments (also ``flask engage status`` and the dashboard)."""
        return collect_status()

    # -- helpers -----------------------------------------------------------------------
    def _refresh(self, segment: Segment, *, trigger: bool = True) -> None:
        operations.refresh_segment(segment.id, trigger=trigger)
        with operation_session() as session:
            fresh = session.get(Segment, segment.id)
        if fresh is not None:
            _refresh_instance(
                segment, fresh, ("member_count", "last_computed_at", "last_duration_ms")
            )

    @staticmethod
    def _ensure_default() -> None:
        state = get_state()
        if not state.default_ready:
            with operation_session() as session:
                segment_service.ensure_default(session)
            state.default_ready = True

    @staticmethod
    def _segment(session: Session, ref: Segment | int | str) -> Segment:
        found = segment_service.find_segment(session, ref)
        if found is None:
            raise NotFound(f"segment: no segment {ref!r}")
        return found

    @staticmethod
    def _automation(session: Session, ref: Automation | int) -> Automation:
        found = session.get(Automation, ref.id if isinstance(ref, Automation) else ref)
        if found is None:
            raise NotFound(f"automation: no automation {ref!r}")
        return found


def _moment(now: datetime | None) -> datetime:
    """``now`` for an operation: the current time, or the given one (naive means UTC)."""
    return utcnow() if now is None else as_aware(now, "now")


def _id(ref: Any) -> Any:
    return ref.id if hasattr(ref, "id") else ref


def _refresh_instance(target: Any, fresh: Any, fields: tuple[str, ...]) -> None:
    """Show ``fresh``'s values on the caller's ``target``.

    A detached instance (what Engage's API returns) gets them copied; an instance
    of the host's session has them expired instead, so it reloads them and its next
    commit does not write stale values back over what a worker wrote.
    """
    state = inspect(target)
    if state.session is None:
        for name in fields:
            setattr(target, name, getattr(fresh, name))
    elif state.persistent:
        state.session.expire(target, list(fields))
