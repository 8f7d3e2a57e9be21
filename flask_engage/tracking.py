"""Data in: customers, attributes and events, written in the host's transaction.

Every way in (``identify``/``track``, ``track_model`` session hooks, ``track_view``
and the HTTP API) ends in the same few set-based writes on the host session's
connection: :func:`write_customers`, :func:`write_events`, the definitions of the
names seen, and an ``evaluate`` outbox row per changed customer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import Connection, bindparam, inspect, select, update
from sqlalchemy.orm import Session

from .db import get_state, host_session, insert_ignoring_conflicts, pending_work
from .errors import ValidationError
from .models import AttributeDefinition, Customer, Event, OutboxTask, utcnow
from .outbox import add_to_outbox
from .values import check_name, normalize_mapping, parse_datetime, value_type

try:  # optional: Flask-Login's current user is the default identity
    from flask_login import current_user
except ImportError:  # pragma: no cover - Flask-Login is not installed
    current_user = None

CHUNK = 500
#: One validated event: (external id, name, properties, occurred_at).
TrackItem = tuple[str, str, dict[str, Any], datetime]
DEFINITION_REFRESH = timedelta(hours=1)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


@dataclass
class CustomerPatch:
    """A change to one customer: ``None`` attribute values remove the attribute."""

    email: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None

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
    """The host's customer id (int or str) as the stored string."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValidationError(f"{field}: customer id must be a string or an integer", field=field)
    text = str(value).strip()
    if not text:
        raise ValidationError(f"{field}: customer id must not be empty", field=field)
    if len(text) > 255:
        raise ValidationError(f"{field}: customer id is longer than 255 characters", field=field)
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


def write_customers(
    conn: Connection, patches: Mapping[str, CustomerPatch], now: datetime | None = None
) -> dict[str, int]:
    """Create or update customers by external id; return external id -> Customer.id.

    One SELECT per chunk, an INSERT for unknown ids, an UPDATE only for rows whose
    stored values change.
    """
    now = now or utcnow()
    table = Customer.__table__
    columns = (
        table.c.id,
        table.c.external_id,
        table.c.email,
        table.c.attributes,
        table.c.created_at,
    )
    ids: dict[str, int] = {}
    updates: list[dict[str, Any]] = []
    for keys in _chunks(list(patches)):
        found = {
            row.external_id: row
            for row in conn.execute(select(*columns).where(table.c.external_id.in_(keys)))
        }
        missing = [key for key in keys if key not in found]
        if missing:
            inserted = conn.execute(
                insert_ignoring_conflicts(conn, table, ["external_id"]).returning(*columns),
                _params(
                    [
                        {
                            "external_id": key,
                            "email": patches[key].email,
                            "attributes": patches[key].apply({}),
                            "created_at": patches[key].created_at or now,
                            "updated_at": now,
                        }
                        for key in missing
                    ]
                ),
            )
            for row in inserted:
                found[row.external_id] = row
            raced = [key for key in missing if key not in found]  # inserted concurrently
            if raced:
                for row in conn.execute(select(*columns).where(table.c.external_id.in_(raced))):
                    found[row.external_id] = row
        for key, row in found.items():
            patch = patches[key]
            ids[key] = row.id
            attributes = patch.apply(row.attributes or {})
            email = patch.email if patch.email is not None else row.email
            created_at = patch.created_at or row.created_at
            if (
                attributes != (row.attributes or {})
                or email != row.email
                or created_at != row.created_at
            ):
                updates.append(
                    {
                        "b_id": row.id,
                        "attributes": attributes,
                        "email": email,
                        "created_at": created_at,
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
                updated_at=bindparam("updated_at"),
            ),
            updates,
        )
    types = {
        name: value_type(value)
        for patch in patches.values()
        for name, value in patch.attributes.items()
    }
    record_definitions(conn, "attribute", "", types, now)
    return ids


def write_events(
    conn: Connection, rows: Sequence[dict[str, Any]], now: datetime | None = None
) -> list[int]:
    """Insert events (``customer_id``, ``name``, ``properties``, ``occurred_at``); return ids."""
    now = now or utcnow()
    ids: list[int] = []
    table = Event.__table__
    for chunk in _chunks(rows):
        result = conn.execute(
            table.insert().returning(table.c.id, sort_by_parameter_order=True), _params(chunk)
        )
        ids.extend(result.scalars())
    record_definitions(conn, "event", "", {row["name"]: "event" for row in rows}, now)
    for name in {row["name"] for row in rows}:
        types = {
            k: value_type(v)
            for row in rows
            if row["name"] == name
            for k, v in row["properties"].items()
        }
        record_definitions(conn, "property", name, types, now)
    return ids


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


def store(
    session: Session,
    patches: Mapping[str, CustomerPatch],
    events: Sequence[TrackItem] = (),
    conn: Connection | None = None,
) -> tuple[dict[str, int], list[int]]:
    """Write customer patches and ``(external_id, name, properties, occurred_at)`` events.

    Every customer named is created if unknown; the touched customers are queued
    for segment re-evaluation in the same transaction, and announced
    (``customer_identified`` for patched ones, ``event_tracked`` for events) once
    it has committed.
    """
    conn = conn or session.connection()
    now = utcnow()
    all_patches = dict(patches)
    for external_id, *_ in events:
        all_patches.setdefault(external_id, CustomerPatch())
    ids = write_customers(conn, all_patches, now)
    event_ids = (
        write_events(
            conn,
            [
                {
                    "customer_id": ids[external_id],
                    "name": name,
                    "properties": properties,
                    "occurred_at": occurred_at,
                }
                for external_id, name, properties, occurred_at in events
            ],
            now,
        )
        if events
        else []
    )
    add_to_outbox(session, OutboxTask.EVALUATE, ids.values(), conn=conn)
    work = pending_work(session)
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


@dataclass
class TrackedModel:
    """How one host model maps onto customers and events."""

    model: type
    customer_id: AttributeSource
    email: AttributeSource | None
    attributes: dict[str, AttributeSource]
    events: dict[str, str]
    changes: dict[str, str]
    properties: tuple[str, ...]

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
    ) -> TrackedModel:
        mapper = inspect(model)
        columns = set(mapper.attrs.keys())
        attrs = dict(attributes) if isinstance(attributes, Mapping) else {a: a for a in attributes}
        for option, names in (
            ("attributes", [v for v in attrs.values() if isinstance(v, str)]),
            ("changes", list(changes or {})),
            ("properties", list(properties)),
            ("customer_id", [customer_id] if isinstance(customer_id, str) else []),
            ("email", [email] if isinstance(email, str) else []),
        ):
            for name in names:
                if name not in columns:
                    raise ValidationError(
                        f"track_model({model.__name__}): {option} names unknown attribute {name!r}",
                        field=option,
                    )
        for name in attrs:
            check_name(name, f"attributes.{name}")
        unknown = set(events or {}) - {"created", "deleted"}
        if unknown:
            raise ValidationError(
                f"track_model({model.__name__}): events keys must be 'created' or 'deleted', "
                f"not {sorted(unknown)}",
                field="events",
            )
        return cls(
            model,
            customer_id,
            email,
            attrs,
            dict(events or {}),
            dict(changes or {}),
            tuple(properties),
        )

    def value(self, instance: Any, source: AttributeSource) -> Any:
        return source(instance) if callable(source) else getattr(instance, source)

    def customer_of(self, instance: Any) -> str | None:
        value = self.value(instance, self.customer_id)
        return None if value is None else check_customer_id(value, "customer_id")

    def patch(self, instance: Any, changed: set[str] | None) -> CustomerPatch | None:
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
            email = check_email(self.value(instance, self.email))
        if not wanted and email is None:
            return None
        values = {name: self.value(instance, source) for name, source in wanted.items()}
        return CustomerPatch(email=email, attributes=normalize_mapping(values, "attributes"))

    def event_properties(self, instance: Any) -> dict[str, Any]:
        return normalize_mapping(
            {name: getattr(instance, name) for name in self.properties}, "properties"
        )


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


def collect_flush(
    session: Session, tracked: Mapping[type, TrackedModel]
) -> tuple[dict[str, CustomerPatch], list[TrackItem]]:
    """Customer patches and events for the tracked rows of one flush."""
    patches: dict[str, CustomerPatch] = {}
    events: list[TrackItem] = []
    now = utcnow()

    def spec_of(instance: Any) -> TrackedModel | None:
        for klass in type(instance).__mro__:
            if klass in tracked:
                return tracked[klass]
        return None

    def add_patch(external_id: str, patch: CustomerPatch | None) -> None:
        if patch is None:
            return
        if external_id in patches:
            patches[external_id].merge(patch)
        else:
            patches[external_id] = patch

    for instance in session.new:
        spec = spec_of(instance)
        if spec is None or (external_id := spec.customer_of(instance)) is None:
            continue
        add_patch(external_id, spec.patch(instance, None) or CustomerPatch())
        if "created" in spec.events:
            events.append(
                (external_id, spec.events["created"], spec.event_properties(instance), now)
            )
    for instance in session.dirty:
        spec = spec_of(instance)
        if spec is None or not session.is_modified(instance):
            continue
        changed = changed_columns(instance)
        if not changed or (external_id := spec.customer_of(instance)) is None:
            continue
        add_patch(external_id, spec.patch(instance, set(changed)))
        for column, event_name in spec.changes.items():
            if column in changed:
                old, new = changed[column]
                properties = {
                    **spec.event_properties(instance),
                    **normalize_mapping({"from": old, "to": new}, "properties"),
                }
                events.append((external_id, event_name, properties, now))
    for instance in session.deleted:
        spec = spec_of(instance)
        if spec is None or "deleted" not in spec.events:
            continue
        if (external_id := spec.customer_of(instance)) is not None:
            events.append(
                (external_id, spec.events["deleted"], spec.event_properties(instance), now)
            )
    return patches, events
