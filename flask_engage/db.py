"""Per-app state and the two kinds of session Engage uses.

* The **host session** (``db.session``): tracked writes go there, so they commit or
  roll back with the host's transaction.
* **Operation sessions**: short sessions of Engage's own on the host's engine, for
  work that commits by itself (recompute, sends, the outbox).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app
from sqlalchemy import Connection, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from .outbox import PENDING

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

    from .extension import Engage

log = logging.getLogger("flask_engage")


@dataclass
class EngageState:
    """What Engage keeps per app."""

    extension: Engage
    db: SQLAlchemy
    #: (kind, scope, name) -> last time ``last_seen`` was written by this process.
    seen_definitions: dict[tuple[str, str, str], datetime] = field(default_factory=dict)
    #: Called with the app after a commit that wrote outbox rows.
    on_outbox: Any = None
    #: The default segment is known to exist.
    default_ready: bool = False
    #: Incremental evaluation's cached all-segments query (segments/membership.py).
    evaluation_plan: Any = None

    @property
    def config(self) -> dict[str, Any]:
        return current_app.config


def get_state(app: Flask | None = None) -> EngageState:
    """The Engage state of ``app`` (default: the current app)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
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
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
    if session.info.pop(PENDING, False):
        if shared is not None:  # dispatched when the host's transaction commits
            state.db.session().info[PENDING] = True
        elif state.on_outbox is not None:
            state.on_outbox(current_app._get_current_object())


def insert_ignoring_conflicts(conn: Connection | Session, table: Any, index_elements: list[str]):
    """``INSERT ... ON CONFLICT DO NOTHING`` for the connection's dialect."""
    name = conn.get_bind().dialect.name if isinstance(conn, Session) else conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=index_elements)
    if name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=index_elements)
    return insert(table).prefix_with("IGNORE")
