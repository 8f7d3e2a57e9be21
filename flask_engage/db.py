"""Per-app state, the two kinds of session Engage uses, and the work a commit leaves.

* The **host session** (``db.session``, or any session of the host's): tracked
  writes go there, so they commit or roll back with the host's transaction.
* **Operation sessions**: short sessions of Engage's own on the host's engine, for
  work that commits by itself (recompute, sends, the outbox).

Either kind notes in :func:`pending_work` what must follow its commit (outbox
rows to dispatch, customers and events to announce); :mod:`flask_engage.hooks`
runs it once the outermost transaction has committed, and drops it on rollback.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, cast

from flask import Flask, current_app
from sqlalchemy import Connection, CursorResult, Result, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

    from .extension import Engage

log = logging.getLogger("flask_engage")


#: ``session.info`` key of the session's :class:`PendingWork`.
PENDING = "engage_pending"
#: ``session.info`` key marking Engage's own operation sessions.
OWN = "engage_operation"


@dataclass
class PendingWork:
    """What a transaction leaves for after its commit."""

    #: Outbox rows were written: hand them to a worker (or run them inline).
    outbox: bool = False
    #: Customers identified (``customer_identified`` after commit).
    customer_ids: set[int] = field(default_factory=set)
    #: Events recorded (``event_tracked`` after commit).
    event_ids: list[int] = field(default_factory=list)

    def merge(self, other: PendingWork) -> None:
        self.outbox |= other.outbox
        self.customer_ids |= other.customer_ids
        self.event_ids += other.event_ids

    def __bool__(self) -> bool:
        return self.outbox or bool(self.customer_ids) or bool(self.event_ids)


def pending_work(session: Session) -> PendingWork:
    """The work ``session``'s current transaction leaves for after its commit."""
    work = session.info.get(PENDING)
    if work is None:
        work = session.info[PENDING] = PendingWork()
    return work


class AfterCommit(Protocol):
    """What runs the work a committed transaction left (``operations.after_commit``)."""

    def __call__(self, app: Flask, work: PendingWork, *, background: bool = False) -> None:
        """``background``: the host's commit (its drain request may go from a thread)."""


@dataclass
class EngageState:
    """What Engage keeps per app."""

    extension: Engage
    db: SQLAlchemy
    #: (kind, scope, name) -> last time ``last_seen`` was written by this process.
    seen_definitions: dict[tuple[str, str, str], datetime] = field(default_factory=dict)
    #: Called with the app and the :class:`PendingWork` of a committed transaction.
    after_commit: AfterCommit | None = None
    #: The default segment is known to exist.
    default_ready: bool = False
    #: Incremental evaluation's cached all-segments query (segments/membership.py).
    evaluation_plan: Any = None
    #: Full recomputes' cached diff statements by segment id (segments/membership.py).
    recompute_statements: dict[int, Any] = field(default_factory=dict)
    #: (segment id, last computed) of segments incremental evaluation failed on.
    unevaluable: set[tuple[int, datetime | None]] = field(default_factory=set)

    @property
    def config(self) -> dict[str, Any]:
        return current_app.config


def this_app() -> Flask:
    """The current Flask app itself, not the proxy (for signals, threads, callbacks)."""
    return current_app._get_current_object()  # type: ignore[attr-defined]


def rowcount(result: Result[Any]) -> int:
    """How many rows an INSERT, UPDATE or DELETE touched."""
    return cast(CursorResult[Any], result).rowcount


def get_state(app: Flask | None = None) -> EngageState:
    """The Engage state of ``app`` (default: the current app)."""
    app = app or this_app()
    try:
        extension = app.extensions["engage"]
    except KeyError:
        message = "Engage is not initialised on this app: call engage.init_app(app)"
        raise RuntimeError(message) from None
    return extension._states[app]


def host_session() -> Session:
    """The host's ``db.session``."""
    return get_state().db.session  # type: ignore[return-value]


def _shared_host_connection(state: EngageState) -> Connection | None:
    """The host's connection when an operation cannot have one of its own.

    With a single shared connection (``sqlite://`` gets a ``StaticPool``), committing
    a session of our own would also commit the host's uncommitted writes. While the
    host has a transaction open there, operations run in a SAVEPOINT inside it
    instead, and commit (or roll back) with the host's work.
    """
    if not isinstance(state.db.engine.pool, StaticPool):
        return None
    host = state.db.session()
    if not host.in_transaction():
        return None
    connection = host.connection()
    dbapi = connection.connection.dbapi_connection
    return connection if getattr(dbapi, "in_transaction", False) else None


def shares_host_transaction() -> bool:
    """True when operations run inside the host's open transaction (see above)."""
    return _shared_host_connection(get_state()) is not None


@contextmanager
def operation_session() -> Iterator[Session]:
    """A session of Engage's own on the host's engine; commits on success."""
    state = get_state()
    shared = _shared_host_connection(state)
    if shared is not None:
        session = Session(
            bind=shared, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
    else:
        session = Session(bind=state.db.engine, expire_on_commit=False)
    session.info[OWN] = True
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
    work = session.info.pop(PENDING, None)
    if work:
        if shared is not None:  # done when the host's transaction commits
            pending_work(state.db.session()).merge(work)
        elif state.after_commit is not None:
            state.after_commit(this_app(), work)


def insert_ignoring_conflicts(conn: Connection | Session, table: Any, index_elements: list[str]):
    """``INSERT ... ON CONFLICT DO NOTHING`` for the connection's dialect."""
    name = conn.get_bind().dialect.name if isinstance(conn, Session) else conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=index_elements)
    if name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=index_elements)
    return insert(table).prefix_with("IGNORE")
