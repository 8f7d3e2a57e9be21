"""Data in: customers, attributes and events, written in the host's transaction.

Every way in (``identify``/``track``, ``track_model`` session hooks, ``track_view``
and the HTTP API) ends in the same few set-based writes on the host session's
connection: :func:`write_customers`, :func:`write_events`, the definitions of the
names seen, and an ``evaluate`` outbox row per changed customer saying what
changed (:mod:`flask_engage.changes`).
"""

from __future__ import annotations

import enum
import functools
import json
import re
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from flask import Flask, current_app
from sqlalchemy import (
    ARRAY,
    Connection,
    String,
    Text,
    bindparam,
    cast,
    func,
    insert,
    inspect,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapper, Session

from .changes import Changes, dump, note
from .db import get_state, host_session, insert_ignoring_conflicts, log, pending_work, this_app
from .errors import ConfigurationError, ValidationError
from .models import (
    AttributeDefinition,
    Automation,
    Customer,
    Event,
    OutboxItem,
    OutboxTask,
    UTCDateTime,
    utcnow,
)
from .outbox import add_to_outbox, evaluation_rows
from .values import check_name, normalize_mapping, normalize_value, parse_datetime, value_type

try:  # optional: Flask-Login's current user is the default identity
    from flask_login import current_user
except ImportError:  # pragma: no cover - Flask-Login is not installed
    current_user = None

CHUNK = 500
#: One validated event: (external id, name, properties, occurred_at).
TrackItem = tuple[str, str, dict[str, Any], datetime]
DEFINITION_REFRESH = timedelta(hours=1)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
#: Seconds a process trusts its list of the event names automations react to.
WATCHED_TTL = 5.0
_watched: weakref.WeakKeyDictionary[Flask, tuple[float, frozenset[str]]] = (
    weakref.WeakKeyDictionary()
)


@dataclass
class CustomerPatch:
    """A change to one customer: ``None`` attribute values remove the attribute.

    ``email``: None leaves it as it is, ``""`` removes it. ``restore``: an identify
    brings back a customer whose host row was deleted (``on_delete="keep"``); an
    event alone does not. ``new``: probably not stored yet (a new row of an identity
    model), so it is inserted without looking it up first; only a hint.
    """

    email: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    restore: bool = True
    new: bool = False

    def apply(self, current: Mapping[str, Any]) -> dict[str, Any]:
        merged = dict(current)
        for name, value in self.attributes.items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        return merged

    def merge(self, other: CustomerPatch) -> None:
        self.attributes.update(other.attributes)
        self.email = other.email if other.email is not None else self.email
        self.created_at = other.created_at or self.created_at
        self.restore = self.restore or other.restore
        self.new = self.new or other.new


def current_identity() -> str | None:
    """The customer id of the current request: ``ENGAGE_IDENTITY()``, else
    Flask-Login's ``current_user`` when it is installed and signed in."""
    identity = current_app.config["ENGAGE_IDENTITY"]
    if identity is not None:
        value = identity()
        return None if value is None else str(value)
    if current_user is None:
        return None
    if getattr(current_user, "is_authenticated", False):
        return str(current_user.get_id())
    return None


def check_customer_id(value: Any, field: str = "id") -> str:
    """The host's customer id (int, str or UUID) as the stored string."""
    if isinstance(value, uuid.UUID):
        value = str(value)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValidationError(f"{field}: customer id must be a string or an integer", field=field)
    text = str(value).strip()
    if not text:
        raise ValidationError(f"{field}: customer id must not be empty", field=field)
    if len(text) > 255:
        raise ValidationError(f"{field}: customer id is longer than 255 characters", field=field)
    if "\x00" in text:  # PostgreSQL cannot store it in text
        raise ValidationError(f"{field}: customer id must not contain a NUL character", field=field)
    return text


def check_email(value: Any, field: str = "email") -> str | None:
    """A plausible single address, or None."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 320 or not _EMAIL.match(value.strip()):
        raise ValidationError(f"{field}: {value!r} is not an email address", field=field)
    return value.strip()


def check_timestamp(value: Any, field: str = "timestamp") -> datetime:
    """An aware datetime from a datetime or an ISO 8601 string (naive means UTC)."""
    return parse_datetime(value, field)


def _params(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | list[dict[str, Any]]:
    """One row as a plain execute (cheaper than an executemany of one), else the list."""
    return rows[0] if len(rows) == 1 else list(rows)


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


#: dialect name -> ``INSERT INTO engage_customers ... ON CONFLICT DO NOTHING RETURNING``.
_customer_inserts: dict[str, Any] = {}


def _customer_columns() -> tuple[Any, ...]:
    table = Customer.__table__
    return (
        table.c.id,
        table.c.external_id,
        table.c.email,
        table.c.attributes,
        table.c.created_at,
        table.c.deleted_at,
    )


def _select_customers(conn: Connection, keys: Sequence[str]) -> dict[str, Any]:
    """The stored rows of these external ids (those that exist)."""
    query = select(*_customer_columns()).where(Customer.__table__.c.external_id.in_(keys))
    return {row.external_id: row for row in conn.execute(query)}


def _insert_customers(
    conn: Connection, keys: Sequence[str], patches: Mapping[str, CustomerPatch], now: datetime
) -> dict[str, int]:
    """Insert customers for these external ids from their patches; external id -> id
    of those inserted (an id that exists already, or was inserted concurrently, is
    left out)."""
    dialect = conn.dialect.name
    if dialect not in _customer_inserts:
        table = Customer.__table__
        _customer_inserts[dialect] = insert_ignoring_conflicts(
            conn, table, ["external_id"]
        ).returning(table.c.external_id, table.c.id)
    inserted = conn.execute(
        _customer_inserts[dialect],
        _params(
            [
                {
                    "external_id": key,
                    "email": patches[key].email or None,
                    "attributes": patches[key].apply({}),
                    "created_at": patches[key].created_at or now,
                    "updated_at": now,
                }
                for key in keys
            ]
        ),
    )
    return {external_id: id_ for external_id, id_ in inserted}


class Written(dict[str, int]):
    """External id -> ``Customer.id`` of the customers written, and in ``changed``
    what the write changed about those it changed (None for those it created or
    restored: anything); a customer whose stored values stay the same is not in it."""

    def __init__(self) -> None:
        super().__init__()
        self.changed: dict[int, Changes | None] = {}


_MISSING = object()


def _same(old: Any, new: Any) -> bool:
    """Equal as stored JSON (``1``, ``1.0`` and ``true`` differ)."""
    if old is _MISSING or new is _MISSING:
        return old is new
    return old == new and json.dumps(old, sort_keys=True) == json.dumps(new, sort_keys=True)


def _changed_names(
    patch: CustomerPatch, old: Mapping[str, Any], new: Mapping[str, Any]
) -> set[str]:
    """The patch's attribute names whose stored value it changes."""
    return {
        name
        for name in patch.attributes
        if not _same(old.get(name, _MISSING), new.get(name, _MISSING))
    }


def write_customers(
    conn: Connection, patches: Mapping[str, CustomerPatch], now: datetime | None = None
) -> Written:
    """Create or update customers by external id; return external id -> Customer.id
    (with what changed about each, see :class:`Written`).

    Per chunk: an INSERT for the patches that say ``new`` (no SELECT first), one
    SELECT for the others, an INSERT for the unknown ones, and an UPDATE only for
    stored rows whose values change (an inserted row holds its patch already).
    """
    now = now or utcnow()
    table = Customer.__table__
    ids = Written()
    updates: list[dict[str, Any]] = []
    for keys in _chunks(list(patches)):
        new = [key for key in keys if patches[key].new]
        inserted = _insert_customers(conn, new, patches, now) if new else {}
        rest = [key for key in keys if key not in inserted]
        found = _select_customers(conn, rest) if rest else {}
        missing = [key for key in rest if key not in found]
        if missing:
            inserted.update(_insert_customers(conn, missing, patches, now))
            raced = [key for key in missing if key not in inserted]  # inserted concurrently
            if raced:
                found.update(_select_customers(conn, raced))
        ids.update(inserted)
        ids.changed.update(dict.fromkeys(inserted.values()))
        for key, row in found.items():
            patch = patches[key]
            ids[key] = row.id
            stored = row.attributes or {}
            attributes = patch.apply(stored)
            names = _changed_names(patch, stored, attributes)
            email = (patch.email or None) if patch.email is not None else row.email
            if email != row.email:
                names.add("email")
            created_at = patch.created_at or row.created_at
            deleted_at = None if patch.restore else row.deleted_at
            moved = created_at != row.created_at or deleted_at != row.deleted_at
            if names or moved:
                ids.changed[row.id] = None if moved else Changes(attributes=frozenset(names))
                updates.append(
                    {
                        "b_id": row.id,
                        "attributes": attributes,
                        "email": email,
                        "created_at": created_at,
                        "deleted_at": deleted_at,
                        "updated_at": now,
                    }
                )
    if updates:
        conn.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(
                attributes=bindparam("attributes"),
                email=bindparam("email"),
                created_at=bindparam("created_at"),
                deleted_at=bindparam("deleted_at"),
                updated_at=bindparam("updated_at"),
            ),
            updates,
        )
    _record_attributes(conn, patches, now)
    return ids


def _record_attributes(
    conn: Connection, patches: Mapping[str, CustomerPatch], now: datetime
) -> None:
    types = {
        name: value_type(value)
        for patch in patches.values()
        for name, value in patch.attributes.items()
    }
    record_definitions(conn, "attribute", "", types, now)


@functools.cache
def _event_with_outbox() -> Any:
    """PostgreSQL: ``WITH (INSERT INTO outbox SELECT ... unnest(keys), unnest(changes))
    INSERT INTO events ... RETURNING id``: one statement, built once, its compiled
    form cached (any number of keys binds as one array, their changes as another)."""
    keys = select(
        bindparam("outbox_task", type_=String),
        func.unnest(bindparam("outbox_keys", type_=ARRAY(String))),
        func.unnest(bindparam("outbox_changes", type_=ARRAY(Text))),
        bindparam("outbox_at", type_=UTCDateTime),
        literal(0),
    )
    columns = ["task", "key", "changes", "created_at", "attempts"]
    rows = insert(OutboxItem.__table__).from_select(columns, keys)
    events = Event.__table__
    return events.insert().returning(events.c.id).add_cte(rows.cte("engage_outbox_rows"))


def write_events(
    conn: Connection,
    rows: Sequence[dict[str, Any]],
    now: datetime | None = None,
    evaluate: Mapping[int, Changes | None] | None = None,
) -> list[int]:
    """Insert events (``customer_id``, ``name``, ``properties``, ``occurred_at``); return ids.

    ``evaluate``: customer id -> what changed about it, to queue for segment
    evaluation (``evaluate`` outbox rows) in the same transaction. On PostgreSQL a
    single event carries them in its INSERT (a CTE): a tracked request pays one
    round trip for both.
    """
    now = now or utcnow()
    ids: list[int] = []
    table = Event.__table__
    queued = False
    for chunk in _chunks(rows):
        params = _params(chunk)
        postgres = conn.dialect.name == "postgresql"
        if evaluate and not queued and postgres and isinstance(params, dict):
            statement, params = (
                _event_with_outbox(),
                {
                    **params,
                    "outbox_task": OutboxTask.EVALUATE.value,
                    "outbox_keys": [str(key) for key in evaluate],
                    "outbox_changes": [dump(changes) for changes in evaluate.values()],
                    "outbox_at": now,
                },
            )
            queued = True
        else:
            statement = table.insert().returning(table.c.id, sort_by_parameter_order=True)
        ids.extend(conn.execute(statement, params).scalars())
    if evaluate and not queued:
        conn.execute(insert(OutboxItem.__table__), evaluation_rows(evaluate))
    _record_events(conn, rows, now)
    return ids


def _record_events(conn: Connection, rows: Sequence[dict[str, Any]], now: datetime) -> None:
    record_definitions(conn, "event", "", {row["name"]: "event" for row in rows}, now)
    for name in {row["name"] for row in rows}:
        types = {
            k: value_type(v)
            for row in rows
            if row["name"] == name
            for k, v in row["properties"].items()
        }
        record_definitions(conn, "property", name, types, now)


@functools.cache
def _signup_statement() -> Any:
    """PostgreSQL, a new customer with one event in one statement: the customer's
    INSERT (nothing on a conflict), its ``evaluate`` outbox row and the event, each
    from the customer the first one returned; no row comes back when it existed."""
    customers, events = Customer.__table__, Event.__table__
    customer = (
        postgresql.insert(customers)
        .values(
            external_id=bindparam("new_external_id", type_=customers.c.external_id.type),
            email=bindparam("new_email", type_=customers.c.email.type),
            attributes=bindparam("new_attributes", type_=customers.c.attributes.type),
            created_at=bindparam("new_created_at", type_=UTCDateTime),
            updated_at=bindparam("new_updated_at", type_=UTCDateTime),
        )
        .on_conflict_do_nothing(index_elements=["external_id"])
        .returning(customers.c.id)
        .cte("engage_new_customer")
    )
    queued = insert(OutboxItem.__table__).from_select(
        ["task", "key", "created_at", "attempts"],
        select(
            bindparam("outbox_task", type_=String),
            cast(customer.c.id, String),
            bindparam("new_updated_at", type_=UTCDateTime),
            literal(0),
        ),
    )
    event = select(
        customer.c.id,
        bindparam("event_name", type_=events.c.name.type),
        bindparam("event_properties", type_=events.c.properties.type),
        bindparam("event_occurred_at", type_=UTCDateTime),
    )
    return (
        insert(events)
        .from_select(["customer_id", "name", "properties", "occurred_at"], event)
        .returning(events.c.customer_id, events.c.id)
        .add_cte(queued.cte("engage_outbox_rows"))
    )


def _write_signup(
    conn: Connection,
    patches: Mapping[str, CustomerPatch],
    events: Sequence[TrackItem],
    now: datetime,
) -> tuple[Written, list[int]] | None:
    """A new row of an identity model with its one event (a sign-up) on PostgreSQL:
    customer, event and ``evaluate`` outbox row in one statement. None (nothing
    written) when this is not that case or the customer exists: the general path."""
    if conn.dialect.name != "postgresql" or len(patches) != 1 or len(events) != 1:
        return None
    ((external_id, patch),) = patches.items()  # the event's customer: the only one
    _, name, properties, occurred_at = events[0]
    if not patch.new:
        return None
    row = conn.execute(
        _signup_statement(),
        {
            "new_external_id": external_id,
            "new_email": patch.email or None,
            "new_attributes": patch.apply({}),
            "new_created_at": patch.created_at or now,
            "new_updated_at": now,
            "outbox_task": OutboxTask.EVALUATE.value,
            "event_name": name,
            "event_properties": properties,
            "event_occurred_at": occurred_at,
        },
    ).first()
    if row is None:
        return None
    customer_id, event_id = row
    _record_attributes(conn, patches, now)
    _record_events(
        conn, [{"customer_id": customer_id, "name": name, "properties": properties}], now
    )
    written = Written()
    written[external_id] = customer_id
    written.changed[customer_id] = None
    return written, [event_id]


def record_definitions(
    conn: Connection, kind: str, scope: str, types: Mapping[str, str | None], now: datetime
) -> None:
    """Remember names seen (and the type of their first non-null value).

    A per-process cache skips names written in the last hour, so steady-state
    tracking adds no query here.
    """
    seen = get_state().seen_definitions
    fresh = {
        name: kind_type
        for name, kind_type in types.items()
        if kind_type is not None
        and now - seen.get((kind, scope, name), now - 2 * DEFINITION_REFRESH) > DEFINITION_REFRESH
    }
    if not fresh:
        return
    table = AttributeDefinition.__table__
    conn.execute(
        insert_ignoring_conflicts(conn, table, ["kind", "scope", "name"]),
        [
            {
                "kind": kind,
                "scope": scope,
                "name": name,
                "type": kind_type,
                "first_seen": now,
                "last_seen": now,
            }
            for name, kind_type in fresh.items()
        ],
    )
    conn.execute(
        update(table)
        .where(table.c.kind == kind, table.c.scope == scope, table.c.name.in_(list(fresh)))
        .where(table.c.last_seen < now)
        .values(last_seen=now)
    )
    for name in fresh:
        seen[(kind, scope, name)] = now


def watched_events(conn: Connection) -> frozenset[str]:
    """Names of the events active automations react to (their event trigger, their
    ``wait_for`` steps), read at most every :data:`WATCHED_TTL` seconds per process."""
    app = this_app()
    cached = _watched.get(app)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    table = Automation.__table__
    active = select(table.c.watched_events).where(table.c.active.is_(True))
    names = frozenset(name for (listed,) in conn.execute(active) for name in listed or ())
    _watched[app] = (time.monotonic() + WATCHED_TTL, names)
    return names


def forget_watched_events() -> None:
    """An automation was saved: read the watched event names again at the next event."""
    _watched.pop(this_app(), None)


def _write_customers_and_events(
    conn: Connection,
    patches: Mapping[str, CustomerPatch],
    events: Sequence[TrackItem],
    now: datetime,
) -> tuple[Written, list[int]]:
    """Customers, events and their ``evaluate`` outbox rows, in a few set-based
    statements: a row for each customer the write changed, saying what changed (the
    attributes, the events tracked; anything for a new customer)."""
    ids = write_customers(conn, patches, now)
    evaluate = dict(ids.changed)
    if not events:
        if evaluate:
            conn.execute(insert(OutboxItem.__table__), evaluation_rows(evaluate))
        return ids, []
    names: dict[int, set[str]] = {}
    for external_id, name, *_ in events:
        names.setdefault(ids[external_id], set()).add(name)
    for customer_id, tracked in names.items():
        note(evaluate, [customer_id], Changes(events=frozenset(tracked)))
    rows = [
        {
            "customer_id": ids[external_id],
            "name": name,
            "properties": properties,
            "occurred_at": occurred_at,
        }
        for external_id, name, properties, occurred_at in events
    ]
    return ids, write_events(conn, rows, now, evaluate=evaluate)


def store(
    session: Session,
    patches: Mapping[str, CustomerPatch],
    events: Sequence[TrackItem] = (),
    conn: Connection | None = None,
) -> tuple[Written, list[int]]:
    """Write customer patches and ``(external_id, name, properties, occurred_at)`` events.

    Every customer named is created if unknown; the customers it changed are
    queued for segment re-evaluation in the same transaction (with what changed),
    events that automations react to for the ``event`` task, and all are announced
    (``customer_identified`` for patched ones, ``event_tracked`` for events) once it
    has committed.
    """
    conn = conn or session.connection()
    now = utcnow()
    all_patches = dict(patches)
    for external_id, *_ in events:
        all_patches.setdefault(external_id, CustomerPatch(restore=False))
    signup = _write_signup(conn, all_patches, events, now)
    if signup is not None:
        ids, event_ids = signup
    else:
        ids, event_ids = _write_customers_and_events(conn, all_patches, events, now)
    if events and (watched := watched_events(conn)):
        reacting = [i for i, item in zip(event_ids, events, strict=True) if item[1] in watched]
        add_to_outbox(session, OutboxTask.EVENT, reacting, conn=conn)
    work = pending_work(session)
    work.outbox |= bool(ids.changed or event_ids)
    work.customer_ids.update(ids[key] for key in patches)
    work.event_ids.extend(event_ids)
    return ids, event_ids


def identify(
    customer_id: int | str,
    *,
    email: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    created_at: datetime | str | None = None,
    **attrs: Any,
) -> Customer:
    """Create or update a customer in the host's transaction (see ``Engage.identify``)."""
    external_id = check_customer_id(customer_id)
    patch = CustomerPatch(
        email=check_email(email),
        attributes=normalize_mapping({**(attributes or {}), **attrs}, "attributes"),
        created_at=check_timestamp(created_at, "created_at") if created_at is not None else None,
    )
    session = host_session()
    ids, _ = store(session, {external_id: patch})
    customer = session.get(Customer, ids[external_id], populate_existing=True)
    assert customer is not None
    return customer


def check_event(
    customer_id: Any, event: Any, properties: Any, timestamp: Any, field: str = ""
) -> TrackItem:
    """Validate one event; ``field`` prefixes error paths (``batch[3].``)."""
    external_id = check_customer_id(customer_id, f"{field}id")
    name = check_name(event, f"{field}event")
    if len(name) > 255:
        raise ValidationError(f"{field}event: name is too long", field=f"{field}event")
    props = normalize_mapping(properties, f"{field}properties")
    occurred_at = (
        check_timestamp(timestamp, f"{field}timestamp") if timestamp is not None else utcnow()
    )
    return external_id, name, props, occurred_at


def track(
    customer_id: int | str,
    event: str,
    properties: Mapping[str, Any] | None = None,
    *,
    timestamp: datetime | str | None = None,
) -> Event:
    """Record an event in the host's transaction (see ``Engage.track``)."""
    item = check_event(customer_id, event, properties, timestamp)
    return track_many([item])[0]


def track_many(items: Sequence[TrackItem]) -> list[Event]:
    """Record already validated events with one write per table."""
    session = host_session()
    _, event_ids = store(session, {}, items)
    loaded = {e.id: e for e in session.scalars(select(Event).where(Event.id.in_(event_ids)))}
    return [loaded[i] for i in event_ids]


# --- track_model -------------------------------------------------------------------------

AttributeSource = str | Callable[[Any], Any]
#: What deleting a tracked row may do to its customer (``track_model(on_delete=...)``).
ON_DELETE = ("forget", "keep")


def storable(value: Any) -> Any:
    """A host column's value in a form Engage stores: an Enum becomes its value, a UUID
    its text, a dict (or a list holding dicts or lists) its JSON text; the rest is left
    to :func:`~flask_engage.values.normalize_value` (Decimal -> number, date -> datetime)."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=_json_default)
    if isinstance(value, list | tuple | set | frozenset):
        items = [storable(item) for item in value]
        if any(isinstance(item, list) for item in items) or any(
            isinstance(item, dict) for item in value
        ):
            return json.dumps(list(value), sort_keys=True, default=_json_default)
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def _reason(error: ValidationError) -> str:
    """An error's message without its field prefix."""
    text = str(error)
    return text.split(": ", 1)[1] if error.field and text.startswith(f"{error.field}: ") else text


class Notes:
    """What automatic tracking could not store: one warning per model column and flush."""

    def __init__(self) -> None:
        self._notes: dict[str, tuple[str, int]] = {}

    def add(self, where: str, message: str) -> None:
        first, count = self._notes.get(where, (message, 0))
        self._notes[where] = (first, count + 1)

    def __bool__(self) -> bool:
        return bool(self._notes)

    def emit(self) -> None:
        for where, (message, count) in self._notes.items():
            rows = f" ({count} rows)" if count > 1 else ""
            log.warning("flask-engage: %s: %s%s; the host's commit goes on", where, message, rows)
        self._notes.clear()


@dataclass
class TrackedModel:
    """How one host model maps onto customers and events.

    ``identity``: rows of this model say who a customer is (its own primary key is
    the customer id, or it gives the email); two identity models must say how their
    ids relate (``customer_prefix``). ``on_delete``: what deleting a row does to its
    customer (``forget``, ``keep`` or None: nothing).
    """

    model: type
    customer_id: AttributeSource
    email: AttributeSource | None
    attributes: dict[str, AttributeSource]
    events: dict[str, str]
    changes: dict[str, str]
    properties: tuple[str, ...]
    customer_prefix: str | None = None
    on_delete: str | None = None
    identity: bool = False

    @classmethod
    def build(
        cls,
        model: type,
        *,
        customer_id: AttributeSource = "id",
        email: AttributeSource | None = None,
        attributes: Iterable[str] | Mapping[str, AttributeSource] = (),
        events: Mapping[str, str] | None = None,
        changes: Mapping[str, str] | None = None,
        properties: Iterable[str] = (),
        customer_prefix: str | None = None,
        on_delete: str | None = None,
    ) -> TrackedModel:
        name = model.__name__
        mapper: Mapper[Any] = inspect(model)
        columns = set(mapper.attrs.keys())
        attrs = dict(attributes) if isinstance(attributes, Mapping) else {a: a for a in attributes}
        for option, names in (
            ("attributes", [v for v in attrs.values() if isinstance(v, str)]),
            ("changes", list(changes or {})),
            ("properties", list(properties)),
            ("customer_id", [customer_id] if isinstance(customer_id, str) else []),
            ("email", [email] if isinstance(email, str) else []),
        ):
            for column in names:
                if column not in columns:
                    raise ValidationError(
                        f"track_model({name}): {option} names unknown attribute {column!r}",
                        field=option,
                    )
        for attribute in attrs:
            check_name(attribute, f"attributes.{attribute}")
        events = dict(events or {})
        unknown = set(events) - {"created", "deleted"}
        if unknown:
            raise ValidationError(
                f"track_model({name}): events keys must be 'created' or 'deleted', "
                f"not {sorted(unknown)}",
                field="events",
            )
        if customer_prefix is not None and (
            not isinstance(customer_prefix, str) or len(customer_prefix) > 64
        ):
            raise ValidationError(
                f"track_model({name}): customer_prefix must be a string of at most 64 characters",
                field="customer_prefix",
            )
        keys = [mapper.get_property_by_column(column).key for column in mapper.primary_key]
        own_key = isinstance(customer_id, str) and keys == [customer_id]
        if on_delete is None:
            on_delete = ("keep" if "deleted" in events else "forget") if own_key else None
        elif on_delete not in ON_DELETE:
            raise ValidationError(
                f"track_model({name}): on_delete must be 'forget' or 'keep', not {on_delete!r}",
                field="on_delete",
            )
        elif on_delete == "forget" and "deleted" in events:
            raise ValidationError(
                f"track_model({name}): on_delete='forget' erases the customer with its events: "
                "a 'deleted' event would be erased too (use on_delete='keep')",
                field="on_delete",
            )
        return cls(
            model,
            customer_id,
            email,
            attrs,
            events,
            dict(changes or {}),
            tuple(properties),
            customer_prefix,
            on_delete,
            own_key or email is not None,
        )

    def where(self, source: AttributeSource, name: str) -> str:
        """``Model.column`` for warnings (the option's name for a callable)."""
        return f"{self.model.__name__}.{source if isinstance(source, str) else name}"

    def value(self, instance: Any, source: AttributeSource) -> Any:
        return source(instance) if callable(source) else getattr(instance, source)

    def stored(self, value: Any, where: str, notes: Notes) -> Any:
        """``value`` as stored, or None (with a note) when it cannot be stored."""
        try:
            return normalize_value(storable(value), where)
        except ValidationError as exc:
            notes.add(where, f"{_reason(exc)}; not stored")
            return None

    def customer_of(self, instance: Any, notes: Notes) -> str | None:
        """The customer id of a row (prefixed), or None: no customer, or an unusable id."""
        value = self.value(instance, self.customer_id)
        if value is None:
            return None
        try:
            text = check_customer_id(value, "customer_id")
            return check_customer_id((self.customer_prefix or "") + text, "customer_id")
        except ValidationError as exc:
            notes.add(self.where(self.customer_id, "customer_id"), f"{_reason(exc)}; row ignored")
            return None

    def email_of(self, instance: Any, notes: Notes) -> str:
        """The row's email, or ``""`` (no email) when it has none or an invalid one."""
        assert self.email is not None
        value = self.value(instance, self.email)
        if value is None or value == "":
            return ""
        try:
            return check_email(storable(value)) or ""
        except ValidationError:
            notes.add(self.where(self.email, "email"), "not an email address; stored as no email")
            return ""

    def patch(self, instance: Any, changed: set[str] | None, notes: Notes) -> CustomerPatch | None:
        """The customer patch for this row; ``changed`` limits it to modified columns."""
        wanted = {
            name: source
            for name, source in self.attributes.items()
            if changed is None or callable(source) or source in changed
        }
        email = None
        if self.email is not None and (
            changed is None or callable(self.email) or self.email in changed
        ):
            email = self.email_of(instance, notes)
        if not wanted and email is None:
            return None
        values = {
            name: self.stored(self.value(instance, source), self.where(source, name), notes)
            for name, source in wanted.items()
        }
        return CustomerPatch(email=email, attributes=values, restore=self.identity)

    def event_properties(self, instance: Any, notes: Notes) -> dict[str, Any]:
        return {
            name: self.stored(getattr(instance, name), self.where(name, name), notes)
            for name in self.properties
        }

    def watched(self) -> set[str]:
        """Columns whose changes matter to this model's tracking (every column when an
        attribute is computed by a callable)."""
        sources = [*self.attributes.values(), self.email, self.customer_id]
        if any(callable(source) for source in sources):
            mapper: Mapper[Any] = inspect(self.model)
            return {attr.key for attr in mapper.column_attrs}
        names = {source for source in sources if isinstance(source, str)}
        return names | set(self.changes) | set(self.properties)


def check_namespaces(tracked: Mapping[type, TrackedModel], new: TrackedModel) -> None:
    """Refuse a second identity model that does not say how its ids relate to another's."""
    if not new.identity or new.customer_prefix is not None:
        return
    for other in tracked.values():
        if not other.identity or other.customer_prefix is not None:
            continue
        if issubclass(new.model, other.model) or issubclass(other.model, new.model):
            continue
        raise ConfigurationError(
            f"track_model({new.model.__name__}): {other.model.__name__} and "
            f"{new.model.__name__} both give customer ids; say how their ids relate: "
            f'customer_prefix="{new.model.__name__.lower()}:" keeps them apart, '
            'customer_prefix="" when the same id is the same person in both'
        )


def spec_for(tracked: Mapping[type, TrackedModel], klass: type) -> TrackedModel | None:
    """The tracking of a class, or of its nearest tracked base class."""
    for base in klass.__mro__:
        if base in tracked:
            return tracked[base]
    return None


@dataclass
class Collected:
    """What the tracked rows of one flush (or bulk statement) ask of Engage."""

    patches: dict[str, CustomerPatch] = field(default_factory=dict)
    events: list[TrackItem] = field(default_factory=list)
    #: Customers to erase (``on_delete="forget"``).
    forget: set[str] = field(default_factory=set)
    #: Customers whose host row is gone (``on_delete="keep"``).
    keep: set[str] = field(default_factory=set)
    notes: Notes = field(default_factory=Notes)

    def __bool__(self) -> bool:
        return bool(self.patches or self.events or self.forget or self.keep)

    def _patch(self, external_id: str, patch: CustomerPatch | None) -> None:
        if patch is None:
            return
        if external_id in self.patches:
            self.patches[external_id].merge(patch)
        else:
            self.patches[external_id] = patch

    def created(self, spec: TrackedModel, instance: Any, now: datetime) -> None:
        """A new row: its customer's patch, and its ``created`` event."""
        if (external_id := spec.customer_of(instance, self.notes)) is None:
            return
        patch = spec.patch(instance, None, self.notes) or CustomerPatch(restore=spec.identity)
        patch.new = spec.identity  # a new row of an identity model: most likely a new customer
        self._patch(external_id, patch)
        if "created" in spec.events:
            properties = spec.event_properties(instance, self.notes)
            self.events.append((external_id, spec.events["created"], properties, now))

    def changed(
        self,
        spec: TrackedModel,
        instance: Any,
        changed: Mapping[str, tuple[Any, Any]],
        now: datetime,
    ) -> None:
        """An updated row: its changed columns (name -> (old, new))."""
        if not changed or (external_id := spec.customer_of(instance, self.notes)) is None:
            return
        self._patch(external_id, spec.patch(instance, set(changed), self.notes))
        for column, event_name in spec.changes.items():
            if column in changed:
                old, new = changed[column]
                where = spec.where(column, column)
                properties = {
                    **spec.event_properties(instance, self.notes),
                    "from": spec.stored(old, where, self.notes),
                    "to": spec.stored(new, where, self.notes),
                }
                self.events.append((external_id, event_name, properties, now))

    def deleted(self, spec: TrackedModel, instance: Any, now: datetime) -> None:
        """A deleted row: its ``deleted`` event, and what happens to its customer."""
        if not (spec.on_delete or "deleted" in spec.events):
            return
        if (external_id := spec.customer_of(instance, self.notes)) is None:
            return
        if "deleted" in spec.events:
            properties = spec.event_properties(instance, self.notes)
            self.events.append((external_id, spec.events["deleted"], properties, now))
        if spec.on_delete == "forget":
            self.forget.add(external_id)
        elif spec.on_delete == "keep":
            self.keep.add(external_id)


def changed_columns(instance: Any) -> dict[str, tuple[Any, Any]]:
    """Columns of a flushed instance that really changed: name -> (old, new)."""
    state = inspect(instance)
    result = {}
    for attr in state.mapper.column_attrs:
        history = state.attrs[attr.key].history
        if history.added:
            old = history.deleted[0] if history.deleted else None
            new = history.added[0]
            if not history.deleted or old != new:
                result[attr.key] = (old, new)
    return result


def collect_flush(session: Session, tracked: Mapping[type, TrackedModel]) -> Collected:
    """Customer patches, events and deletes for the tracked rows of one flush."""
    collected = Collected()
    now = utcnow()
    for instance in session.new:
        if (spec := spec_for(tracked, type(instance))) is not None:
            collected.created(spec, instance, now)
    for instance in session.dirty:
        spec = spec_for(tracked, type(instance))
        if spec is not None and session.is_modified(instance):
            collected.changed(spec, instance, changed_columns(instance), now)
    for instance in session.deleted:
        if (spec := spec_for(tracked, type(instance))) is not None:
            collected.deleted(spec, instance, now)
    return collected
