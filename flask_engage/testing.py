"""Helpers for a host's own tests (see ``docs/testing.md``).

* :data:`TEST_SETTINGS`: inline jobs, time moved only by ``engage.run_due(now)``,
  emails recorded instead of sent.
* :func:`fresh_tables`: the host's and Engage's tables for one test.
* :func:`recorded`: what a signal sent while a block ran, without blinker's weak
  references getting in the way.

Emails: Flask-Mail's own ``app.extensions["mail"].record_messages()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from blinker import Signal

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

    from .extension import Engage

#: ``app.config.update(TEST_SETTINGS)`` in a test app factory, before ``init_app``.
TEST_SETTINGS: dict[str, Any] = {
    #: Flask-Mail suppresses sending and records every message.
    "TESTING": True,
    #: No Redis: the work a commit creates runs inline, right after the commit.
    "ENGAGE_REDIS_URL": None,
    #: Waits, schedules and time-based segments move only with ``engage.run_due(now)``.
    "ENGAGE_INLINE_SCHEDULE": False,
    #: Links in test emails (unsubscribe, clicks) need an absolute base.
    "ENGAGE_BASE_URL": "http://localhost",
}


@contextmanager
def fresh_tables(db: SQLAlchemy, engage: Engage) -> Iterator[None]:
    """Create the host's and Engage's tables for one test, drop them after it.

    Run it inside the app context; ``engage.create_all()`` also creates the ``All``
    segment.
    """
    db.create_all()
    engage.create_all()
    try:
        yield
    finally:
        db.session.remove()
        engage.drop_all()
        db.drop_all()


@contextmanager
def recorded(signal: Signal) -> Iterator[list[dict[str, Any]]]:
    """The keyword arguments of every send of ``signal`` while the block runs.

    The receiver is held strongly (blinker holds receivers weakly by default: an
    inner function connected without ``weak=False`` disappears at once).
    """
    calls: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        calls.append(kwargs)

    with signal.connected_to(receiver):
        yield calls
