"""Draining the outbox: claim rows, do their work, keep failures local.

Rows are claimed by ``DELETE ... RETURNING`` (with ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL) in the transaction that does their work, so each is processed exactly
once. A batch is done together; if it fails, its items are done one by one in
savepoints, and an item that fails alone is put back with a backoff, then parked
after :data:`MAX_ATTEMPTS`: one bad record never holds up the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from ..changes import load
from ..db import PENDING, log, operation_session, pending_work, rowcount
from ..models import OutboxItem, utcnow
from ..segments.membership import send_signals
from .tasks import Batch, Done, handler_for

#: Attempts before an outbox item is parked.
MAX_ATTEMPTS = 5
#: Rows claimed per transaction.
BATCH = 500

outbox = OutboxItem.__table__


@dataclass(frozen=True)
class Item:
    """A claimed outbox row."""

    task: str
    key: str
    attempts: int
    #: What changed (``evaluate`` rows, stored form; None: anything).
    changes: str | None = None


def retry_delay(attempts: int) -> timedelta:
    """Backoff before attempt ``attempts + 1``: 30 s, 2 min, 8 min, 32 min..."""
    return timedelta(seconds=30 * 4 ** max(attempts - 1, 0))


def _claimable(now: datetime) -> list:
    return [
        outbox.c.parked_at.is_(None),
        or_(outbox.c.available_at.is_(None), outbox.c.available_at <= now),
    ]


def claim(session: Session, limit: int, now: datetime) -> list[Item]:
    """Delete up to ``limit`` due outbox rows and return them.

    PostgreSQL workers skip rows another one holds; on SQLite this DELETE is the
    transaction's first write, so writers queue up behind it (it is only run when
    a row is due). If the work fails, the rollback brings the rows back.
    """
    pick = select(outbox.c.id).where(*_claimable(now)).order_by(outbox.c.id).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)  # an empty claim locks nothing
    elif session.scalar(pick.limit(1)) is None:  # nothing to do: take no write lock
        return []
    deleted = session.execute(
        delete(outbox)
        .where(outbox.c.id.in_(pick))
        .returning(outbox.c.task, outbox.c.key, outbox.c.attempts, outbox.c.changes)
    )
    return [Item(task, key, attempts or 0, changes) for task, key, attempts, changes in deleted]


def _run(session: Session, items: list[Item], now: datetime) -> Done:
    done = Done()
    by_task: dict[str, Batch] = {}
    for item in items:
        batch = by_task.setdefault(item.task, Batch())
        batch.keys.append(int(item.key))
        batch.changes.append(load(item.changes))
    for name, batch in by_task.items():
        handler = handler_for(name)
        if handler is None:
            log.warning(
                "flask-engage: dropped %d outbox row(s) of unknown task %r", len(batch.keys), name
            )
            continue
        done.add(handler(session, batch, now))
    return done


def _put_back(session: Session, item: Item, error: str, now: datetime) -> None:
    """Retry an item later, or park it after :data:`MAX_ATTEMPTS`."""
    attempts = item.attempts + 1
    parked = attempts >= MAX_ATTEMPTS
    session.execute(
        insert(outbox).values(
            task=item.task,
            key=item.key,
            created_at=now,
            attempts=attempts,
            available_at=now + retry_delay(attempts),
            parked_at=now if parked else None,
            error=error[:2000],
            changes=item.changes,
        )
    )
    log.warning(
        "flask-engage: outbox %s %s %s: %s",
        item.task,
        item.key,
        "parked" if parked else f"failed (attempt {attempts}, retried later)",
        error,
    )


def process(session: Session, items: list[Item], now: datetime) -> Done:
    """Do the items' work together; if that fails, one by one, putting back failures."""
    try:
        with session.begin_nested():
            return _run(session, items, now)
    except Exception as exc:
        if len(items) == 1:
            _put_back(session, items[0], f"{type(exc).__name__}: {exc}", now)
            return Done()
        log.warning("flask-engage: a batch of %d outbox items failed; one by one", len(items))
    done = Done()
    for item in items:
        try:
            with session.begin_nested():
                done.add(_run(session, [item], now))
        except Exception as exc:
            _put_back(session, item, f"{type(exc).__name__}: {exc}", now)
    return done


def drain_outbox(now: datetime | None = None, batch: int = BATCH) -> tuple[int, bool]:
    """Process every due outbox row; returns (rows processed, whether anything may
    now send: a membership change that may start runs, a broadcast, queued sends)."""
    count, triggered, more = 0, False, True
    while more:
        moment = now or utcnow()
        with operation_session() as session:
            items = claim(session, batch, moment)
            if not items:
                break
            done = process(session, items, moment)
            # A short batch took every due row; rows committed since asked for
            # their own drain. Look again only for a full batch or rows just added.
            added = session.info.get(PENDING)
            more = len(items) == batch or (added is not None and added.outbox)
        count += len(items)
        triggered |= done.triggered
        if done.computations:
            with operation_session() as session:
                send_signals(session, done.computations)
    return count, triggered


def counts() -> tuple[int, int]:
    """(items waiting, items parked)."""
    with operation_session() as session:
        waiting = session.scalar(
            select(func.count()).select_from(outbox).where(outbox.c.parked_at.is_(None))
        )
        parked = session.scalar(
            select(func.count()).select_from(outbox).where(outbox.c.parked_at.is_not(None))
        )
    return waiting or 0, parked or 0


def retry_parked() -> int:
    """Give every parked item a new start (dispatched after commit); returns how many."""
    with operation_session() as session:
        retried = rowcount(
            session.execute(
                update(outbox)
                .where(outbox.c.parked_at.is_not(None))
                .values(parked_at=None, available_at=None, attempts=0)
            )
        )
        if retried:
            pending_work(session).outbox = True
    return retried
