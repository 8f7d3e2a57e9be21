"""Engage's tables, on Engage's own ``MetaData``, all named ``engage_*``.

The models are plain SQLAlchemy declarative classes: they are read and written
through the host's ``db.session`` (tracked data) or through short sessions of
Engage's own on the host's engine (operations such as ``recompute``).
This module imports no other Engage module.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: JSON on SQLite, JSONB on PostgreSQL (indexable, compact).
JSONType = JSON().with_variant(JSONB(), "postgresql")
#: 64-bit ids on PostgreSQL; SQLite needs plain INTEGER for rowid aliasing.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class BroadcastStatus(StrEnum):
    """Where a broadcast is: draft -> scheduled -> queued -> sending -> sent / partial / failed."""

    DRAFT = "draft"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"


class MessageStatus(StrEnum):
    """A message is queued, then sent, failed or skipped (``error`` says why)."""

    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


class RunStatus(StrEnum):
    """An automation run: live (``active``, ``waiting``) or ended."""

    ACTIVE = "active"
    WAITING = "waiting"
    COMPLETED = "completed"
    EXITED = "exited"
    CANCELLED = "cancelled"
    #: A step kept failing: the run waits for someone to retry it (``error`` says why).
    PARKED = "parked"


#: Runs that still have steps ahead of them.
LIVE_RUNS = (RunStatus.ACTIVE, RunStatus.WAITING)


class TriggerKind(StrEnum):
    """What starts an automation."""

    JOINS = "joins"
    LEAVES = "leaves"
    #: The customer records an event (``trigger_event``, matching ``trigger_where``).
    EVENT = "event"
    #: A customer's subscription to a list takes effect (added, or confirmed).
    SUBSCRIBES = "subscribes"
    #: A subscribed customer unsubscribes from a list or is removed from it.
    UNSUBSCRIBES = "unsubscribes"


#: Triggers on a list.
LIST_TRIGGERS = (TriggerKind.SUBSCRIBES, TriggerKind.UNSUBSCRIBES)


class ChangeKind(StrEnum):
    """A membership change."""

    JOINED = "joined"
    LEFT = "left"


class OutboxTask(StrEnum):
    """Work a commit leaves for a job (see :class:`OutboxItem`)."""

    #: Re-evaluate a customer's segments (key: customer id).
    EVALUATE = "evaluate"
    #: Snapshot a queued broadcast's recipients (key: broadcast id).
    BROADCAST = "broadcast"
    #: Deliver queued messages (key: 0).
    DELIVER = "deliver"
    #: React to an event automations watch: start event-triggered runs, wake runs
    #: waiting for it (key: event id).
    EVENT = "event"
    #: Email a list's double opt-in confirmation link (key: list member id).
    CONFIRM_LIST = "confirm_list"


class ListMemberStatus(StrEnum):
    """A list member: ``subscribed`` (receives what is sent to the list), ``pending``
    (double opt-in, not confirmed yet) or ``unsubscribed`` (opted out of this list)."""

    SUBSCRIBED = "subscribed"
    PENDING = "pending"
    UNSUBSCRIBED = "unsubscribed"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC, always returns aware UTC datetimes (SQLite returns naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base holding Engage's own metadata."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    #: Every model maps one Core table (set-based statements use it directly).
    __table__: ClassVar[Table]


class Customer(Base):
    """A person known to the host app. ``external_id`` is the host's id as a string.

    ``deleted_at`` is set when the host deleted the row behind a customer tracked with
    ``on_delete="keep"``: the history stays, but the customer is in no segment and
    gets no message until identified again.
    """

    __tablename__ = "engage_customers"
    # SQLite: AUTOINCREMENT, so the id of a deleted (merged) customer is never given to a
    # new one. PostgreSQL's sequences never reuse ids.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    external_id: Mapped[str] = mapped_column(String(255), unique=True)
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"<Customer {self.external_id!r}>"

    def template_context(self) -> dict[str, Any]:
        """What templates see as ``customer``: attributes plus ``id`` and ``email``."""
        return {**(self.attributes or {}), "id": self.external_id, "email": self.email}


class CustomerAlias(Base):
    """A host id merged into another customer (``engage.merge``).

    Unsubscribe links made for the merged customer act on ``customer_id``, the
    customer it was merged into (or, after later merges, that one's destination).
    ``source_id`` and ``source_created_at`` are the merged customer's internal id and
    creation time: links made before version 0.3 carry the internal id.
    """

    __tablename__ = "engage_customer_aliases"
    __table_args__ = (
        Index("ix_engage_customer_aliases_external_id", "external_id", "merged_at"),
        Index("ix_engage_customer_aliases_source_id", "source_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    external_id: Mapped[str] = mapped_column(String(255))
    source_id: Mapped[int] = mapped_column(BigId)
    source_created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    customer_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("engage_customers.id", ondelete="CASCADE"), index=True
    )
    merged_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AttributeDefinition(Base):
    """A customer attribute or event property seen in tracked data, with its type.

    ``kind`` is ``attribute`` (customer attributes), ``event`` (event names, type
    ``event``) or ``property`` (event properties, ``scope`` is the event name).
    The type is recorded when the name is first written.
    """

    __tablename__ = "engage_definitions"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    scope: Mapped[str] = mapped_column(String(255), primary_key=True, default="")
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Event(Base):
    """Something a customer did, at ``occurred_at``."""

    __tablename__ = "engage_events"
    __table_args__ = (
        Index("ix_engage_events_customer_name_time", "customer_id", "name", "occurred_at"),
        Index("ix_engage_events_name_time", "name", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("engage_customers.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(255))
    properties: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    customer: Mapped[Customer] = relationship(lazy="joined")

    def __repr__(self) -> str:
        return f"<Event {self.name!r} customer={self.customer_id}>"


class Unsubscription(Base):
    """A customer's opt-out of one channel (``email``, ``push``, ``in_app``)."""

    __tablename__ = "engage_unsubscriptions"

    customer_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("engage_customers.id", ondelete="CASCADE"), primary_key=True
    )
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Segment(Base):
    """A named filter; membership is maintained automatically."""

    __tablename__ = "engage_segments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    filters: Mapped[dict[str, Any]] = mapped_column(JSONType)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    #: True when the filter uses relative time: re-evaluated on a schedule.
    is_time_based: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    last_computed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_duration_ms: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    member_count: Mapped[int] = mapped_column(Integer, default=0)

    def __repr__(self) -> str:
        return f"<Segment {self.slug!r}>"


class Membership(Base):
    """A customer currently in a segment."""

    __tablename__ = "engage_memberships"
    __table_args__ = (Index("ix_engage_memberships_customer", "customer_id"),)

    segment_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("engage_segments.id", ondelete="CASCADE"), primary_key=True
    )
    customer_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("engage_customers.id", ondelete="CASCADE"), primary_key=True
    )
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MembershipChange(Base):
    """History of joins and leaves; ``computation`` groups one evaluation's changes."""

    __tablename__ = "engage_membership_changes"
    __table_args__ = (
        Index("ix_engage_membership_changes_segment_at", "segment_id", "at"),
        Index("ix_engage_membership_changes_computation", "computation"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    segment_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("engage_segments.id", ondelete="CASCADE")
    )
    customer_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("engage_customers.id", ondelete="CASCADE")
    )
    #: ``joined`` or ``left``.
    kind: Mapped[str] = mapped_column(String(8))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    computation: Mapped[str] = mapped_column(String(32))


class SegmentSnapshot(Base):
    """A segment's size and the number of all customers at the end of one day."""

    __tablename__ = "engage_segment_snapshots"

    segment_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("engage_segments.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    members: Mapped[int] = mapped_column(Integer)
    total: Mapped[int] = mapped_column(Integer)


class CustomerList(Base):
    """A list people join by hand (a form, an import, the API), beside automatic segments.

    ``public``: anyone may subscribe through the list's public form (otherwise only
    the host, an import or the API add people). ``double_optin``: people who subscribe
    through the form are ``pending`` until they confirm by email; ``redirect_url`` is
    where the form (or the confirmation link) sends them afterwards. An archived list
    (``archived_at``) takes no new subscribers; its members stay.
    """

    __tablename__ = "engage_lists"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    double_optin: Mapped[bool] = mapped_column(Boolean, default=False)
    redirect_url: Mapped[str | None] = mapped_column(String(2048))
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"<CustomerList {self.slug!r}>"


class ListMember(Base):
    """A customer's place on a list; ``status`` is a :class:`ListMemberStatus`.

    Only ``subscribed`` members count for filters, broadcasts and automations. A
    person who signed up through the public form of a double opt-in list and is not
    a customer yet is a ``pending`` row with ``customer_id`` None, their ``email``
    and the ``attributes`` the form gave: the customer is created when they confirm.
    """

    __tablename__ = "engage_list_members"
    __table_args__ = (
        UniqueConstraint("list_id", "customer_id", name="uq_engage_list_members_customer"),
        Index("ix_engage_list_members_customer", "customer_id"),
        Index("ix_engage_list_members_list_status", "list_id", "status", "customer_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    list_id: Mapped[int] = mapped_column(Integer, ForeignKey("engage_lists.id", ondelete="CASCADE"))
    customer_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("engage_customers.id", ondelete="CASCADE")
    )
    status: Mapped[str] = mapped_column(String(16))
    #: A pending sign-up of someone who is not a customer yet (else None).
    email: Mapped[str | None] = mapped_column(String(320))
    #: What that sign-up's form gave (``first_name``...), applied when they confirm.
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    subscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When the last confirmation email was asked for (double opt-in).
    confirm_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"<ListMember list={self.list_id} customer={self.customer_id} {self.status}>"


class ListChange(Base):
    """History of subscriptions: ``joined`` when a member becomes subscribed, ``left``
    when a subscribed member unsubscribes or is removed. ``computation`` groups one
    write's changes (the automations they start are started from it)."""

    __tablename__ = "engage_list_changes"
    __table_args__ = (
        Index("ix_engage_list_changes_list_at", "list_id", "at"),
        Index("ix_engage_list_changes_computation", "computation"),
        Index("ix_engage_list_changes_customer", "customer_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    list_id: Mapped[int] = mapped_column(Integer, ForeignKey("engage_lists.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("engage_customers.id", ondelete="CASCADE")
    )
    #: A :class:`ChangeKind`: ``joined`` or ``left``.
    kind: Mapped[str] = mapped_column(String(8))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    computation: Mapped[str] = mapped_column(String(32))


class OutboxItem(Base):
    """Work a commit created, written in the same transaction, done by a job.

    ``task`` is an :class:`OutboxTask`, ``key`` what it is about (a customer id for
    ``evaluate``, with what changed about the customer in ``changes``).
    Rows are deleted in the transaction that does their work, so each is processed
    exactly once. An item whose work fails is put back with ``attempts`` + 1 and
    ``available_at`` later (backoff); after too many attempts it is parked
    (``parked_at``) with its ``error``, visible in ``engage.status()``. No index but
    the primary key: rows are claimed in id order, and any other would cost every
    tracked write.
    """

    __tablename__ = "engage_outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    task: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: Failed attempts so far; the item is retried with backoff, then parked.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: Not claimed before this moment (backoff after a failure); None: at once.
    available_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Set when the item is parked: no job takes it until someone retries it.
    parked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The last failure.
    error: Mapped[str | None] = mapped_column(Text)
    #: ``evaluate`` rows: what the write changed about the customer
    #: (:func:`flask_engage.changes.dump`); None: anything may have.
    changes: Mapped[str | None] = mapped_column(Text)


class SchedulerState(Base):
    """Small key/value facts about the schedule (last tick, last snapshot day)."""

    __tablename__ = "engage_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Broadcast(Base):
    """A one-off message to the members of segments and the subscribers of lists.

    ``status`` goes draft -> scheduled -> queued -> sending -> sent, or cancelled / failed.
    """

    __tablename__ = "engage_broadcasts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(16))
    segment_ids: Mapped[list[int]] = mapped_column(JSONType, default=list)
    list_ids: Mapped[list[int]] = mapped_column(JSONType, default=list)
    subject: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    send_to_unsubscribed: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The channel's own settings of the send, beyond subject and body (a webhook's
    #: ``url`` and ``headers``), as checked by the channel.
    options: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16), default="draft")
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)

    def __repr__(self) -> str:
        return f"<Broadcast {self.name!r} {self.status}>"


class Automation(Base):
    """Steps walked by each customer who joins (or leaves) the trigger segment,
    subscribes to (or unsubscribes from) the trigger list, or records the trigger event.

    ``steps`` are the steps as given (branches nest theirs); runs walk the flat
    program they compile to (``AutomationRun.step`` and ``Message.step`` are
    positions in it; see ``flask_engage.automations.steps``).
    """

    __tablename__ = "engage_automations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    #: A :class:`TriggerKind`.
    trigger_kind: Mapped[str] = mapped_column(String(16))
    #: The segment of a ``joins`` / ``leaves`` trigger.
    trigger_segment_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("engage_segments.id", ondelete="CASCADE"), index=True
    )
    #: The list of a ``subscribes`` / ``unsubscribes`` trigger.
    trigger_list_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("engage_lists.id", ondelete="CASCADE"), index=True
    )
    #: The event of an ``event`` trigger, and its property conditions.
    trigger_event: Mapped[str | None] = mapped_column(String(255))
    trigger_where: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    #: Names of the events it reacts to (its trigger, its ``wait_for`` steps), or None.
    watched_events: Mapped[list[str] | None] = mapped_column(JSONType)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    reentry: Mapped[bool] = mapped_column(Boolean, default=False)
    exit_on_leave: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    @property
    def trigger(self) -> dict[str, Any]:
        """The trigger as given to ``create_automation``: ``{"joins": segment_id}``,
        ``{"subscribes": list_id}`` or ``{"event": name, "where": [...]}``."""
        if self.trigger_kind == TriggerKind.EVENT:
            trigger: dict[str, Any] = {"event": self.trigger_event}
            if self.trigger_where:
                trigger["where"] = self.trigger_where
            return trigger
        if self.trigger_kind in LIST_TRIGGERS:
            return {self.trigger_kind: self.trigger_list_id}
        return {self.trigger_kind: self.trigger_segment_id}

    def __repr__(self) -> str:
        return f"<Automation {self.name!r}>"


class AutomationRun(Base):
    """One customer's walk through an automation (one per entry).

    ``status`` is a :class:`RunStatus`: ``active`` (a step is due at ``due_at``),
    ``waiting`` (in a wait step until ``due_at``), ``completed``, ``exited``,
    ``cancelled``, or ``parked`` (a step kept failing; ``error`` says why).
    """

    __tablename__ = "engage_automation_runs"
    __table_args__ = (
        UniqueConstraint("automation_id", "customer_id", "entry", name="uq_engage_runs_entry"),
        UniqueConstraint("automation_id", "event_id", name="uq_engage_runs_event"),
        Index("ix_engage_runs_status_due", "status", "due_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    automation_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("engage_automations.id", ondelete="CASCADE")
    )
    customer_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("engage_customers.id", ondelete="CASCADE")
    )
    entry: Mapped[int] = mapped_column(Integer, default=1)
    #: The event that started it (event triggers): one run per automation and event.
    event_id: Mapped[int | None] = mapped_column(BigId)
    #: Position in the automation's program (its compiled steps).
    step: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.ACTIVE)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: When the run reached its current step, on the automation's clock (a
    #: ``wait_for`` step counts events from here); None: at ``due_at``.
    step_reached_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Failed attempts at the current step (retried with backoff, then parked).
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: The last failure, when a step failed.
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Message(Base):
    """One message to one customer from one send (broadcast or automation step).

    ``status`` is a :class:`MessageStatus`: ``queued``, ``sent``, ``failed`` or
    ``skipped`` (``error`` says why: ``unsubscribed``, ``no_address``,
    ``frequency_cap``...). A queued message is claimed by a worker
    (``claimed_at``/``claim``) before delivery, so two workers never deliver it
    twice. A failure that may pass is retried with backoff (``attempts``,
    ``retry_at``) before the message is marked failed.
    """

    __tablename__ = "engage_messages"
    __table_args__ = (
        UniqueConstraint("broadcast_id", "customer_id", name="uq_engage_messages_broadcast"),
        UniqueConstraint("run_id", "step", name="uq_engage_messages_run_step"),
        Index("ix_engage_messages_status", "status", "id"),
        Index("ix_engage_messages_customer", "customer_id", "channel", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: None once the customer was forgotten: the message stays for counts, anonymous.
    customer_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("engage_customers.id", ondelete="SET NULL")
    )
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    broadcast_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("engage_broadcasts.id", ondelete="CASCADE")
    )
    automation_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("engage_automations.id", ondelete="SET NULL"), index=True
    )
    run_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("engage_automation_runs.id", ondelete="SET NULL")
    )
    step: Mapped[int | None] = mapped_column(Integer)
    subject: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claim: Mapped[str | None] = mapped_column(String(32))
    #: Delivery attempts that failed for a reason that may pass (a dead SMTP server).
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: A queued message is not tried again before this moment.
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: First open (email pixel) that looked like a person, and first that looked like
    #: a machine (a privacy proxy fetching every image, a security scanner).
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    machine_opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: First click (email link, push notification) by a person, and by a machine.
    clicked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    machine_clicked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: What the channel reported about the last delivery attempt (a webhook's
    #: ``status`` code and ``latency_ms``); ``None`` when it reported nothing.
    receipt: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    customer: Mapped[Customer | None] = relationship(lazy="joined")

    def __repr__(self) -> str:
        return f"<Message {self.channel} {self.status} customer={self.customer_id}>"


class PushSubscription(Base):
    """A browser's Web Push subscription for a customer."""

    __tablename__ = "engage_push_subscriptions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("engage_customers.id", ondelete="CASCADE"), index=True
    )
    endpoint: Mapped[str] = mapped_column(String(2048), unique=True)
    p256dh: Mapped[str] = mapped_column(String(255))
    auth: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


metadata = Base.metadata
