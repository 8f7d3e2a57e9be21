"""Every SQLAlchemy listener Engage installs, in one place.

* ``after_flush`` (any :class:`~sqlalchemy.orm.Session`): rows of tracked host
  models become customer and event writes, in the host's transaction.
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

from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from .db import OWN, PENDING, PendingWork, get_state
from .tracking import TrackedModel, collect_flush, store

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


def _after_flush(session: Session, flush_context: Any) -> None:
    if session.info.get(OWN):
        return
    tracked = _tracked()
    if tracked is None:
        return
    patches, events = collect_flush(session, tracked)
    if patches or events:
        store(session, patches, events, conn=session.connection())


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
        state.after_commit(current_app._get_current_object(), work)  # type: ignore[attr-defined]
