"""The ``Engage`` extension object: configuration, wiring, and the Python API."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app, make_response
from sqlalchemy import event, select
from sqlalchemy.orm import Query, Session

from . import jobs, tracking
from .config import apply_defaults, unknown_keys
from .db import EngageState, get_state, host_session, log, operation_session
from .errors import ConfigurationError, NotFound
from .models import Automation, Broadcast, Customer, Event, Segment, metadata, utcnow
from .segments import history as segment_history_module
from .segments import service as segment_service
from .segments.membership import Outcome
from .values import as_aware

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy


_LISTENED: weakref.WeakSet[type] = weakref.WeakSet()


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
        app.extensions["engage"] = self
        self._states[app] = EngageState(extension=self, db=db, on_outbox=jobs.dispatch)
        self._listen(db)
        if "mail" not in app.extensions:
            from flask_mail import Mail

            Mail(app)

        from .blueprints import register_blueprints
        from .cli import engage_cli

        register_blueprints(app)
        app.cli.add_command(engage_cli)
        from .admin import init_admin

        init_admin(app)
        from .migrations import skip_in_host_autogenerate

        skip_in_host_autogenerate(app)

    def _listen(self, db: SQLAlchemy) -> None:
        session_class = db.session.session_factory.class_  # type: ignore[attr-defined]
        if session_class in _LISTENED:
            return
        _LISTENED.add(session_class)
        event.listen(session_class, "after_flush", _after_flush)
        event.listen(session_class, "after_commit", jobs.after_commit)
        event.listen(session_class, "after_rollback", jobs.after_rollback)
        event.listen(session_class, "after_transaction_end", jobs.after_transaction_end)

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
    ) -> Any:
        """Follow a host model: attributes copied, created/deleted/changed events recorded.

        Usable as ``engage.track_model(User, ...)`` or as a class decorator
        ``@engage.track_model(attributes=["plan"])``.
        """
        options = dict(
            customer_id=customer_id,
            email=email,
            attributes=attributes,
            events=events,
            changes=changes,
            properties=properties,
        )

        def register(cls: type) -> type:
            spec = tracking.TrackedModel.build(cls, **options)
            self._tracked[cls] = spec
            for column in spec.changes:
                event.listen(getattr(cls, column), "set", _noop_set, active_history=True)
            return cls

        return register if model is None else register(model)

    def track_view(
        self, event: str, properties: Mapping[str, Any] | Callable[[], Any] | None = None
    ):
        """View decorator: record ``event`` for the current identity when the view
        answers below 400, and commit it."""

        def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(view)
            def wrapped(*args: Any, **kwargs: Any) -> Any:
                response = make_response(view(*args, **kwargs))
                if response.status_code < 400:
                    customer_id = self.current_identity()
                    if customer_id is not None:
                        props = properties() if callable(properties) else properties
                        try:
                            tracking.track(customer_id, event, props)
                            host_session().commit()
                        except Exception:
                            host_session().rollback()
                            log.exception("flask-engage: track_view(%r) failed", event)
                return response

            return wrapped

        return decorator

    def current_identity(self) -> str | None:
        """The customer id of the current request (``ENGAGE_IDENTITY`` or Flask-Login)."""
        identity = current_app.config["ENGAGE_IDENTITY"]
        if identity is not None:
            value = identity()
            return None if value is None else str(value)
        try:
            from flask_login import current_user
        except ImportError:
            return None
        if current_user and getattr(current_user, "is_authenticated", False):
            return str(current_user.get_id())
        return None

    def merge(self, source_id: int | str, destination_id: int | str) -> Customer:
        """Move a customer's events, attributes and subscriptions onto another; delete it."""
        from .merge import merge_customers

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
    ) -> Segment:
        """Rename, re-describe or re-filter a segment (members are recomputed)."""
        with operation_session() as session:
            found = self._segment(session, segment)
            changed = segment_service.update_segment(
                session, found, name=name, filters=filters, description=description
            )
        if changed:
            self._refresh(found)
        return found

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
        with operation_session() as session:
            segment_service.ensure_default(session)
            if segment is None:
                ids = list(session.scalars(select(Segment.id).order_by(Segment.id)))
            else:
                ids = [self._segment(session, segment).id]
        outcomes = [jobs.recompute_one(segment_id, now) for segment_id in ids]
        self._finish(now)
        return [o for o in outcomes if o is not None]

    def segment_history(self, segment: Segment | int | str, days: int = 30) -> list[Any]:
        """Oldest first, one point per day (``date``, ``members``, ``total``, ``percent``)."""
        if not isinstance(days, int) or days < 1 or days > 3660:
            from .errors import ValidationError

            raise ValidationError("days: expected a whole number from 1 to 3660", field="days")
        with operation_session() as session:
            return segment_history_module.segment_history(
                session, self._segment(session, segment), days, utcnow()
            )

    # -- messages ----------------------------------------------------------------------
    def unsubscribe(self, customer_id: int | str, channel: str = "email") -> None:
        """Opt a customer out of a channel (they stay in their segments)."""
        from .messages.unsubscribe import set_subscription

        set_subscription(customer_id, channel, subscribed=False)

    def resubscribe(self, customer_id: int | str, channel: str = "email") -> None:
        """Undo an unsubscribe."""
        from .messages.unsubscribe import set_subscription

        set_subscription(customer_id, channel, subscribed=True)

    def create_broadcast(
        self,
        name: str,
        *,
        channel: str,
        segments: Iterable[Segment | int | str],
        subject: str | None = None,
        body: str,
        send_to_unsubscribed: bool = False,
        scheduled_at: datetime | None = None,
    ) -> Broadcast:
        """Create a broadcast draft (validated, templates checked)."""
        from .messages.broadcasts import create_broadcast

        with operation_session() as session:
            return create_broadcast(
                session,
                name,
                channel=channel,
                segments=list(segments),
                subject=subject,
                body=body,
                send_to_unsubscribed=send_to_unsubscribed,
                scheduled_at=None
                if scheduled_at is None
                else as_aware(scheduled_at, "scheduled_at"),
            )

    def send_broadcast(
        self, broadcast: Broadcast | int, *, now: datetime | None = None
    ) -> Broadcast:
        """Queue a broadcast (or schedule it if ``scheduled_at`` is in the future).

        Sending one that is already queued, sending or sent does nothing.
        """
        from .messages.broadcasts import request_send

        broadcast_id = broadcast.id if isinstance(broadcast, Broadcast) else broadcast
        with operation_session() as session:
            request_send(session, broadcast_id, _moment(now))
        # The commit above dispatched the work (inline: already sent). Answer its state now.
        with operation_session() as session:
            result = session.get(Broadcast, broadcast_id)
        if isinstance(broadcast, Broadcast) and result is not None:
            for field in ("status", "started_at", "finished_at"):
                setattr(broadcast, field, getattr(result, field))
        return result

    def cancel_broadcast(self, broadcast: Broadcast | int) -> Broadcast:
        """Cancel a draft or scheduled broadcast (a send in progress stops)."""
        from .messages.broadcasts import cancel

        with operation_session() as session:
            return cancel(session, broadcast.id if isinstance(broadcast, Broadcast) else broadcast)

    def broadcast_counts(self, broadcast: Broadcast | int) -> dict[str, int]:
        """Messages of a broadcast by status and skip reason."""
        from .messages.broadcasts import counts

        with operation_session() as session:
            return counts(session, broadcast.id if isinstance(broadcast, Broadcast) else broadcast)

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
        """Create an automation started when a customer joins or leaves a segment."""
        from . import automations

        with operation_session() as session:
            return automations.create_automation(
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
        from . import automations

        with operation_session() as session:
            found = self._automation(session, automation)
            if isinstance(changes.get("trigger"), Mapping):
                changes["trigger"] = {
                    k: (v.id if isinstance(v, Segment) else v)
                    for k, v in changes["trigger"].items()
                }
            return automations.update_automation(session, found, **changes)

    def delete_automation(self, automation: Automation | int) -> None:
        """Delete an automation; its live runs are cancelled."""
        from . import automations

        with operation_session() as session:
            automations.delete_automation(session, self._automation(session, automation))

    def automation_stats(self, automation: Automation | int) -> dict[str, Any]:
        """Runs by status and messages per step."""
        from . import automations

        with operation_session() as session:
            return automations.automation_stats(session, self._automation(session, automation))

    # -- jobs --------------------------------------------------------------------------
    def run_due(self, now: datetime | None = None) -> dict[str, int]:
        """Run whatever is due by ``now`` (waits, scheduled broadcasts, time-based
        segments, snapshots, outbox leftovers)."""
        return jobs.run_due(_moment(now))

    def work(self, burst: bool = False) -> bool:
        """Run an RQ SimpleWorker for Engage's queue in this process."""
        return jobs.work(burst=burst)

    # -- helpers -----------------------------------------------------------------------
    def _finish(self, now: datetime) -> None:
        """Inline mode: finish what an operation triggered; Redis mode: queue it."""
        if current_app.config.get("ENGAGE_REDIS_URL"):
            jobs.request_drain()
        else:
            jobs.finish_inline(now, triggered=True)  # the recompute may have started runs

    def _refresh(self, segment: Segment) -> None:
        if current_app.config.get("ENGAGE_REDIS_URL"):
            if jobs.enqueue(jobs.job_recompute, segment.id):
                return
        jobs.recompute_one(segment.id)
        if not current_app.config.get("ENGAGE_REDIS_URL"):
            jobs.finish_inline(triggered=True)
        with operation_session() as session:
            fresh = session.get(Segment, segment.id)
            if fresh is not None:
                segment.member_count = fresh.member_count
                segment.last_computed_at = fresh.last_computed_at
                segment.last_duration_ms = fresh.last_duration_ms

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


def _noop_set(target: Any, value: Any, oldvalue: Any, initiator: Any) -> Any:
    """Registered with ``active_history=True`` so old values of change columns load."""
    return value


def _after_flush(session: Session, flush_context: Any) -> None:
    from flask import has_app_context

    if not has_app_context():
        return
    extension = current_app.extensions.get("engage")
    if not isinstance(extension, Engage) or not extension._tracked:
        return
    patches, events = tracking.collect_flush(session, extension._tracked)
    if patches or events:
        tracking.store(session, patches, events, conn=session.connection())
