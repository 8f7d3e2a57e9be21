"""Every SQLAlchemy listener Engage installs, in one place.

* ``after_flush`` (any :class:`~sqlalchemy.orm.Session`): rows of tracked host
  models become customer and event writes, in the host's transaction; deleted
  rows forget or keep their customer (``on_delete``).
* ``do_orm_execute``: ORM-enabled bulk ``update(Model)`` / ``delete(Model)`` (and
  ``Query.update/delete``) on tracked models are tracked like flushed rows: the
  matching rows are read before the statement and again after it, through the
  same connection, in the same transaction.
* ``after_commit`` / ``after_soft_rollback`` / ``after_transaction_end``: the work
  a transaction leaves (:class:`~flask_engage.db.PendingWork`) runs once the
  outermost transaction has committed, and is dropped when it rolls back; a
  rolled-back SAVEPOINT keeps the outer transaction's work.
* a ``set`` listener with ``active_history`` on columns whose changes fire events,
  so their old values are loaded before the flush.

Listeners are installed on the base ``Session`` class once per process and look
up the current app's Engage, so writes through any session of the host's (not
only ``db.session``) are tracked.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import Result, event, select, tuple_
from sqlalchemy.orm import Mapper, ORMExecuteState, Session, SessionTransaction

from . import customers
from .db import OWN, PENDING, PendingWork, get_state, this_app
from .models import utcnow
from .tracking import Collected, TrackedModel, collect_flush, spec_for, store

#: Rows read per statement when a bulk statement is tracked.
CHUNK = 500

#: ``session.info`` key holding the work of a transaction that has committed.
COMMITTED = "engage_committed"

_installed = False


def install() -> None:
    """Install the session listeners (once per process)."""
    global _installed
    if _installed:
        return
    _installed = True
    event.listen(Session, "after_flush", _after_flush)
    event.listen(Session, "do_orm_execute", _do_orm_execute)
    event.listen(Session, "after_commit", _after_commit)
    event.listen(Session, "after_soft_rollback", _after_soft_rollback)
    event.listen(Session, "after_transaction_end", _after_transaction_end)


def follow_changes(model: type, columns: list[str]) -> None:
    """Load the old values of ``columns`` before a flush (for ``changes`` events)."""
    for column in columns:
        event.listen(getattr(model, column), "set", _keep_value, active_history=True)


def _keep_value(target: Any, value: Any, oldvalue: Any, initiator: Any) -> Any:
    return value


def _tracked() -> dict[type, TrackedModel] | None:
    if not has_app_context() or "engage" not in current_app.extensions:
        return None
    return get_state().extension._tracked or None


def _write(session: Session, collected: Collected) -> None:
    """Store what tracked rows asked for, in ``session``'s transaction."""
    collected.notes.emit()
    if collected.patches or collected.events:
        store(session, collected.patches, collected.events, conn=session.connection())
    if collected.keep - collected.forget:
        customers.keep(session, collected.keep - collected.forget)
    if collected.forget:
        customers.forget(session, collected.forget)


def _after_flush(session: Session, flush_context: Any) -> None:
    if session.info.get(OWN):
        return
    tracked = _tracked()
    if tracked is None:
        return
    collected = collect_flush(session, tracked)
    if collected or collected.notes:
        _write(session, collected)


def _do_orm_execute(state: ORMExecuteState) -> Result[Any] | None:
    if not (state.is_update or state.is_delete) or state.session.info.get(OWN):
        return None
    mapper = state.bind_mapper
    tracked = _tracked() if mapper is not None else None
    if mapper is None or tracked is None:
        return None
    spec = spec_for(tracked, mapper.class_)
    if spec is None:
        return None
    if state.is_update:
        return _bulk_update(state, mapper, spec)
    return _bulk_delete(state, mapper, spec)


@contextmanager
def _reader(session: Session) -> Iterator[Session]:
    """A session of Engage's own on the host session's connection: it sees the
    transaction's rows and leaves the host's identity map alone."""
    reader = Session(bind=session.connection(), autoflush=False)
    reader.info[OWN] = True
    try:
        yield reader
    finally:
        reader.close()


def _keys_in(mapper: Mapper[Any], keys: Sequence[tuple[Any, ...]]) -> Any:
    """``primary key IN keys`` (a plain IN for a one-column key)."""
    if len(mapper.primary_key) == 1:
        return mapper.primary_key[0].in_([key[0] for key in keys])
    return tuple_(*mapper.primary_key).in_(keys)


def _matching(state: ORMExecuteState, mapper: Mapper[Any], columns: Sequence[str]) -> list[Any]:
    """Primary key and ``columns`` of the rows a bulk statement is about to change.

    Rows are locked on PostgreSQL (the statement would lock them anyway), so what is
    read is what the statement changes.
    """
    names = [mapper.get_property_by_column(column).key for column in mapper.primary_key]
    query = select(*(getattr(mapper.class_, name) for name in [*names, *columns]))
    if state.session.get_bind(mapper).dialect.name == "postgresql":
        query = query.with_for_update(of=mapper.local_table)
    params = state.parameters
    if isinstance(params, list):  # bulk UPDATE by primary key: one dict per row
        keys = [tuple(row[name] for name in names) for row in params]
        return [
            row
            for start in range(0, len(keys), CHUNK)
            for row in state.session.execute(
                query.where(_keys_in(mapper, keys[start : start + CHUNK]))
            )
        ]
    where = state.statement.whereclause  # type: ignore[attr-defined]
    if where is not None:
        query = query.where(where)
    return list(state.session.execute(query, params or {}))


def _instances(reader: Session, mapper: Mapper[Any], keys: Sequence[tuple[Any, ...]]):
    """The rows with these primary keys, loaded in chunks by ``reader``."""
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start : start + CHUNK]
        yield from reader.scalars(select(mapper).where(_keys_in(mapper, chunk)))
        reader.expunge_all()


def _bulk_update(state: ORMExecuteState, mapper: Mapper[Any], spec: TrackedModel) -> Result[Any]:
    if not (spec.attributes or spec.email or spec.changes):
        return state.invoke_statement()
    columns = sorted(spec.watched())
    width = len(mapper.primary_key)
    before = {
        tuple(row[:width]): dict(zip(columns, row[width:], strict=True))
        for row in _matching(state, mapper, columns)
    }
    result = state.invoke_statement()
    if not before:
        return result
    collected, now = Collected(), utcnow()
    with _reader(state.session) as reader:
        for instance in _instances(reader, mapper, list(before)):
            old = before[tuple(mapper.primary_key_from_instance(instance))]
            changed = {
                column: (old[column], getattr(instance, column))
                for column in columns
                if old[column] != getattr(instance, column)
            }
            collected.changed(spec, instance, changed, now)
    _write(state.session, collected)
    return result


def _bulk_delete(state: ORMExecuteState, mapper: Mapper[Any], spec: TrackedModel) -> Result[Any]:
    if not (spec.on_delete or "deleted" in spec.events):
        return state.invoke_statement()
    width = len(mapper.primary_key)
    keys = [tuple(row[:width]) for row in _matching(state, mapper, [])]
    collected, now = Collected(), utcnow()
    with _reader(state.session) as reader:
        for instance in _instances(reader, mapper, keys):
            collected.deleted(spec, instance, now)
    result = state.invoke_statement()
    _write(state.session, collected)
    return result


def _after_commit(session: Session) -> None:
    if session.info.get(OWN):
        return
    work = session.info.pop(PENDING, None)
    if work:
        committed = session.info.setdefault(COMMITTED, PendingWork())
        committed.merge(work)


def _after_soft_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    # A SAVEPOINT (or an inner subtransaction) rolled back: the outer transaction
    # and its tracked work go on. Only the outermost rollback drops the work.
    if previous_transaction.parent is None and not previous_transaction.nested:
        session.info.pop(PENDING, None)
        session.info.pop(COMMITTED, None)


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None or transaction.nested or session.info.get(OWN):
        return
    work = session.info.pop(COMMITTED, None)
    if not work or not has_app_context():
        return
    state = get_state()
    if state.after_commit is not None:
        state.after_commit(this_app(), work, background=True)
