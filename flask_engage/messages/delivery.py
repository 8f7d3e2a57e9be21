"""Delivery of queued messages, batch by batch, each message sent once (but a few).

A batch is *claimed* (``claim``/``claimed_at`` set in one committed UPDATE, with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL). The worker's own thread then renders each
message and hands it to its channel's connection: for email,
``ENGAGE_SMTP_CONNECTIONS`` connections at once, each in a thread of its own that
only talks SMTP (:meth:`~flask_engage.channels.Channel.parallel`). Outcomes are
written in groups: every outcome known by then in one statement and one commit (a
*group commit*: under load one commit covers several messages, never waits for
more). On PostgreSQL with several connections a writer thread on a database
connection of its own writes them (:class:`_Writer`), so rendering never waits for
a commit; otherwise the worker's thread does.

The hand-off to the mail server is at-least-once, with a bounded window: a
connection sends its next message only once the status of its previous one is
committed. A worker killed mid-batch leaves its claimed messages queued, claimed
again once the lease (``ENGAGE_SEND_LEASE`` seconds) expires; a message whose
status was committed is never sent again, so only the message in flight on each
connection at the moment of the crash (at most ``ENGAGE_SMTP_CONNECTIONS``
messages, one with a single connection) can be delivered twice. None is lost.

Connections are opened at a channel's first message and kept for the whole
:class:`DeliveryRun` (``deliver_all`` runs batch after batch over the same ones);
``deliver_batch`` without a run opens and closes them for its batch.

Opt-outs are checked again when a batch is claimed, so a customer who
unsubscribes while a broadcast is being sent gets nothing more from it.

A failure that may pass (the channel raises ``RetryLater``: an SMTP server down)
leaves the message queued with ``retry_at`` set, tried again with backoff, and
failed after :data:`MAX_ATTEMPTS`. A connection that cannot be opened is not tried
again in the same run: the rest of its messages are retried later. Any other
failure fails that message alone. What the channel reports about an attempt
(``Outgoing.receipt``: a webhook's status code and latency) is stored on the
message as ``receipt``.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from flask import Flask, current_app
from sqlalchemy import (
    Connection,
    CursorResult,
    bindparam,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from .. import signals
from ..automations.steps import program_of
from ..channels import (
    Channel,
    DeliveryFailed,
    Outgoing,
    RetryLater,
    SkipMessage,
    get_channel,
)
from ..db import get_state, log
from ..errors import ValidationError
from ..models import (
    Automation,
    Broadcast,
    CustomerList,
    Message,
    MessageStatus,
    Unsubscription,
    utcnow,
)
from .broadcasts import finish_broadcasts
from .compose import compose


@dataclass(frozen=True)
class Source:
    """What a message is made from: its templates, and whether opt-outs are ignored."""

    subject: str | None
    body: str
    ignore_opt_out: bool = False
    #: The channel's own settings (beyond subject and body).
    options: Mapping[str, Any] = field(default_factory=dict)
    #: A broadcast to one list (and no segment): its unsubscribe link leaves the list.
    unsubscribe_list: CustomerList | None = None


#: Delivery attempts (for failures that may pass) before a message is failed.
MAX_ATTEMPTS = 5


#: Longest wait a receiver's ``Retry-After`` can ask for (seconds): a day.
MAX_RETRY_AFTER = 86_400


def retry_delay(attempts: int) -> timedelta:
    """Backoff before attempt ``attempts + 1``: 1, 4, 16, 64 minutes."""
    return timedelta(minutes=4 ** max(attempts - 1, 0))


def claim_batch(
    limit: int, broadcast_id: int | None = None, due: datetime | None = None
) -> str | None:
    """Claim up to ``limit`` queued messages; returns the claim token (None if none).

    ``due`` is the moment retries are due by (default: now).
    """
    now = utcnow()
    due = due or now
    lease = timedelta(seconds=current_app.config["ENGAGE_SEND_LEASE"])
    session = Session(bind=get_state().db.engine)
    try:
        free = or_(Message.claimed_at.is_(None), Message.claimed_at < now - lease) & or_(
            Message.retry_at.is_(None), Message.retry_at <= due
        )
        query = (
            select(Message.id)
            .where(Message.status == MessageStatus.QUEUED, free)
            .order_by(Message.id)
            .limit(limit)
        )
        if broadcast_id is not None:
            query = query.where(Message.broadcast_id == broadcast_id)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = list(session.scalars(query))
        if not ids:
            return None
        token = uuid.uuid4().hex
        session.execute(
            update(Message)
            .where(Message.id.in_(ids), Message.status == MessageStatus.QUEUED, free)
            .values(claim=token, claimed_at=now)
        )
        session.commit()
        return token
    finally:
        session.close()


def _only_list(session: Session, broadcast: Broadcast) -> CustomerList | None:
    """The list of a broadcast to one list and no segment (None otherwise)."""
    lists = broadcast.list_ids or []
    if len(lists) != 1 or broadcast.segment_ids:
        return None
    return session.get(CustomerList, lists[0])


def _source(session: Session, message: Message, cache: dict[Any, Source | None]) -> Source:
    if message.broadcast_id is not None:
        key: tuple[Any, ...] = ("b", message.broadcast_id)
        if key not in cache:
            broadcast = session.get(Broadcast, message.broadcast_id)
            cache[key] = (
                Source(
                    broadcast.subject,
                    broadcast.body,
                    broadcast.send_to_unsubscribed,
                    options=broadcast.options or {},
                    unsubscribe_list=_only_list(session, broadcast),
                )
                if broadcast
                else None
            )
    else:
        key = ("a", message.automation_id, message.step)
        if key not in cache:
            automation = (
                session.get(Automation, message.automation_id) if message.automation_id else None
            )
            spec = None
            if automation is not None and message.step is not None:
                program = program_of(automation)
                if message.step < len(program):
                    spec = program[message.step].get("send")
            cache[key] = (
                Source(
                    spec.get("subject"),
                    spec["body"],
                    options={k: v for k, v in spec.items() if k not in _COMMON},
                )
                if spec
                else None
            )
    source = cache[key]
    if source is None:
        raise SkipMessage("source_deleted")
    return source


def _over_cap(session: Session, message: Message, now: datetime) -> bool:
    caps = current_app.config.get("ENGAGE_FREQUENCY_CAP") or {}
    cap = caps.get(message.channel)
    if not cap:
        return False
    limit, seconds = cap
    sent = session.scalar(
        select(func.count()).where(
            Message.customer_id == message.customer_id,
            Message.channel == message.channel,
            Message.status == MessageStatus.SENT,
            Message.sent_at >= now - timedelta(seconds=seconds),
        )
    )
    return (sent or 0) >= limit


_COMMON = ("channel", "subject", "body")


class _Latch:
    """Set once, waited for by one thread: a held lock released on ``set``.

    Cheaper than ``threading.Event`` (a condition variable in Python) on the path
    every message takes.
    """

    __slots__ = ("_lock", "_set")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._set = False

    def set(self) -> None:
        if not self._set:
            self._set = True
            self._lock.release()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        """True once set (at most ``timeout`` seconds from now)."""
        if self._lock.acquire(timeout=timeout):
            self._lock.release()
            return True
        return False


@dataclass(eq=False)
class _Attempt:
    """One claimed message on its way; what went wrong, once its send is over."""

    message: Message
    attempts: int
    started: datetime
    receipt: dict[str, Any] = field(default_factory=dict)
    #: What preparing or sending raised; None: sent.
    error: Exception | None = None
    #: Set once its status is committed (its connection waits for it to send more).
    recorded: _Latch = field(default_factory=_Latch)
    #: Its status was written (False: cancelled or re-claimed in the meantime).
    written: bool = False


class _Link:
    """A channel's connection, opened at a send when there is none.

    After a failure that may pass (an SMTP 4xx, a lost connection) the next send
    starts on a fresh connection. A connection that cannot be opened is not tried
    again in the same batch (``batch()`` says which batch the run is at): the
    channel's other messages on it are retried later at once.
    """

    def __init__(self, channel: Channel, batch: Callable[[], int]) -> None:
        self.channel = channel
        self.batch = batch
        self.stack = ExitStack()
        self.connection: Any = None
        self.opened = False
        self.down: tuple[int, RetryLater] | None = None

    def transmit(self, prepared: Any) -> None:
        if self.down is not None and self.down[0] == self.batch():
            raise self.down[1]
        if not self.opened:
            try:
                self.connection = self.stack.enter_context(self.channel.connect())
            except RetryLater as exc:
                self.down = (self.batch(), exc)
                raise
            self.opened, self.down = True, None
        try:
            self.channel.transmit(prepared, self.connection)
        except RetryLater:
            self.close()
            raise

    def close(self) -> None:
        """Close the connection (a later send opens another)."""
        self.opened, self.connection = False, None
        self.stack.close()


class _Pool:
    """Threads sending one channel's messages, each over a connection of its own."""

    def __init__(
        self,
        channel: Channel,
        size: int,
        done: queue.SimpleQueue[_Attempt | None],
        batch: Callable[[], int],
    ) -> None:
        self.channel = channel
        self.done = done
        self.batch = batch
        self.jobs: queue.SimpleQueue[tuple[_Attempt, Any] | None] = queue.SimpleQueue()
        self.closing = threading.Event()
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        self.threads = [
            threading.Thread(
                target=self._work, args=(app,), name=f"engage-{channel.name}-{n}", daemon=True
            )
            for n in range(size)
        ]
        for thread in self.threads:
            thread.start()

    def _work(self, app: Flask) -> None:
        link = _Link(self.channel, self.batch)
        with app.app_context(), closing(link):
            while (job := self.jobs.get()) is not None and not self.closing.is_set():
                attempt, prepared = job
                try:
                    link.transmit(prepared)
                except Exception as exc:  # classified by the worker's thread
                    attempt.error = exc
                self.done.put(attempt)
                # Send nothing more until this status is committed: a crash leaves at
                # most one sent but unrecorded message per connection.
                while not attempt.recorded.wait(0.2):
                    if self.closing.is_set():
                        return

    def close(self) -> None:
        """Stop the threads (each after its send in progress) and close their connections."""
        self.closing.set()
        for _ in self.threads:
            self.jobs.put(None)
        for thread in self.threads:
            thread.join()


class DeliveryRun:
    """The channels' connections (and their threads) kept across the batches of a run.

    ``with DeliveryRun() as run:`` then ``deliver_batch(..., run=run)`` for each batch.
    """

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._lanes: dict[str, _Link | _Pool] = {}
        #: Attempts that are over, for their status to be written.
        self.over: queue.SimpleQueue[_Attempt | None] = queue.SimpleQueue()
        #: Pool threads (connections sending at once).
        self.threads = 0
        self.batches = 0
        #: Attempts handed to a pool whose send is not over yet.
        self.pending = 0

    def _batch(self) -> int:
        return self.batches

    def __enter__(self) -> DeliveryRun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the threads and close every connection (later sends open new ones)."""
        try:
            self._stack.close()
        finally:
            self._lanes.clear()
            self.over = queue.SimpleQueue()
            self.threads = self.pending = 0

    def submit(self, channel: Channel, attempt: _Attempt, prepared: Any) -> bool:
        """Send ``prepared`` over the channel's connections. True: the send is over
        (one connection: sent here, its status to be written at once); False: it is
        returned by :meth:`finished` once over."""
        lane = self._lanes.get(channel.name)
        if lane is None:
            size = channel.parallel()
            if size > 1:
                lane = _Pool(channel, size, self.over, self._batch)
                self.threads += size
            else:
                lane = _Link(channel, self._batch)
            self._stack.callback(lane.close)
            self._lanes[channel.name] = lane
        if isinstance(lane, _Pool):
            self.pending += 1
            lane.jobs.put((attempt, prepared))
            return False
        try:
            lane.transmit(prepared)
        except Exception as exc:  # classified by the caller
            attempt.error = exc
        return True

    def finished(self, *, wait: bool) -> list[_Attempt]:
        """Pool sends that are over, in groups (one status write each).

        Without ``wait``: none until half the threads wait for their status to be
        written, or every connection has work queued (then it blocks for one).
        ``wait``: block until one is over (the end of a batch).
        """
        if not self.pending:
            return []
        if (
            not wait
            and self.pending < 2 * self.threads
            and self.over.qsize() < max(1, self.threads // 2)
        ):
            return []
        over = [cast(_Attempt, self.over.get())]  # None only ends a _Writer
        while True:
            try:
                over.append(cast(_Attempt, self.over.get_nowait()))
            except queue.Empty:
                break
        self.pending -= len(over)
        return over


def _prepare(
    session: Session,
    message: Message,
    cache: dict[Any, Source | None],
    opted_out: bool,
    receipt: dict[str, Any],
) -> tuple[Channel, Any]:
    """Render one message for its channel; raises SkipMessage or any delivery error."""
    source = _source(session, message, cache)
    if opted_out and not source.ignore_opt_out:
        raise SkipMessage("unsubscribed")
    customer = message.customer
    if customer is None or customer.deleted_at is not None:
        raise SkipMessage("deleted")  # forgotten, or its host row deleted (on_delete="keep")
    channel = get_channel(message.channel)
    composed = compose(
        customer,
        channel,
        source.subject,
        source.body,
        message_id=message.id,
        unsubscribe_list=source.unsubscribe_list,
    )
    rendered = composed.rendered
    message.subject, message.body = rendered.subject, rendered.html or rendered.text
    outgoing = Outgoing(
        session=session,
        message=message,
        customer=customer,
        rendered=rendered,
        unsubscribe_url=composed.unsubscribe_url,
        report_url=composed.report_url,
        context=composed.context,
        options=source.options,
        receipt=receipt,
    )
    return channel, channel.prepare(outgoing)


def _outcome(
    attempt: _Attempt, due: datetime | None
) -> tuple[MessageStatus, str | None, datetime | None, int]:
    """Status, error, ``retry_at`` and attempts of a send that is over."""
    message, exc, attempts = attempt.message, attempt.error, attempt.attempts
    if exc is None:
        return MessageStatus.SENT, None, None, attempts
    if isinstance(exc, SkipMessage):
        return MessageStatus.SKIPPED, str(exc), None, attempts
    if isinstance(exc, RetryLater):
        attempts += 1
        log.warning("flask-engage: message %s not delivered: %s", message.id, exc)
        if attempts >= MAX_ATTEMPTS:
            return MessageStatus.FAILED, f"gave up after {attempts} attempts: {exc}", None, attempts
        wait = retry_delay(attempts)
        if exc.after is not None:  # the receiver's Retry-After, within reason
            wait = max(wait, timedelta(seconds=min(exc.after, MAX_RETRY_AFTER)))
        retry_at = max(attempt.started, due or attempt.started) + wait
        return MessageStatus.QUEUED, str(exc), retry_at, attempts
    if isinstance(exc, DeliveryFailed):
        error = str(exc)
    else:  # one bad message must not stop the batch
        error = f"{type(exc).__name__}: {exc}"[:2000]
    log.warning("flask-engage: message %s failed: %s", message.id, error)
    return MessageStatus.FAILED, error, None, attempts


_messages = Message.__table__
#: What a send that is over writes on its message (and ``claim`` is cleared).
_WRITTEN = ("status", "error", "sent_at", "subject", "body", "attempts", "retry_at", "receipt")
_WRITE_ONE = (
    update(_messages)
    .where(
        _messages.c.id == bindparam("m_id"),
        _messages.c.claim == bindparam("m_claim"),
        _messages.c.status == MessageStatus.QUEUED,
    )
    .values(claim=None, claimed_at=None, **{n: bindparam(f"m_{n}") for n in _WRITTEN})
)


#: PostgreSQL: the statuses of many sends in one statement, the same text every time
#: (the rows as one JSON array: one parameter, serialized in C). ``ids`` repeats the
#: rows' ids so the planner finds them by primary key: joined on the JSON rows alone
#: it scanned every queued message (the whole broadcast) for each group.
_WRITE_MANY = text(
    f"""
    UPDATE {_messages.name} AS m SET
        status = o.status, error = o.error, sent_at = o.sent_at, subject = o.subject,
        body = o.body, attempts = o.attempts, retry_at = o.retry_at, receipt = o.receipt,
        claim = NULL, claimed_at = NULL
    FROM jsonb_to_recordset(CAST(:rows AS JSONB)) AS o(
        id BIGINT, status VARCHAR, error TEXT, sent_at TIMESTAMPTZ, subject TEXT,
        body TEXT, attempts INTEGER, retry_at TIMESTAMPTZ, receipt JSONB
    )
    WHERE m.id = o.id AND m.id = ANY(CAST(:ids AS BIGINT[]))
        AND m.claim = :claim AND m.status = :queued
    RETURNING m.id
    """
)
#: The same for psycopg 3's own cursor: a server-side prepared statement, run without
#: SQLAlchemy's statement machinery (most of a group write's CPU in the worker).
_WRITE_MANY_PSYCOPG = re.sub(r":(rows|ids|claim|queued)\b", r"%(\1)s", _WRITE_MANY.text)


def _write(session: Session, token: str, rows: list[dict[str, Any]]) -> set[int]:
    """Write the statuses of sends that are over, guarded (still queued under this
    claim: not cancelled, not re-claimed after the lease ran out), and commit;
    returns the ids written.

    PostgreSQL: one UPDATE for all of them (one round trip on the batch's autocommit
    connection). SQLite, in the process: one UPDATE each, in one transaction.
    """
    if session.get_bind().dialect.name != "postgresql":
        written = set()
        for row in rows:
            params = {f"m_{name}": value for name, value in row.items()}
            result = session.execute(_WRITE_ONE, {**params, "m_claim": token})
            if cast(CursorResult[Any], result).rowcount:
                written.add(row["id"])
        session.commit()
        return written
    for row in rows:
        for name in ("sent_at", "retry_at"):
            row[name] = row[name] and row[name].isoformat()
    params = {
        "rows": json.dumps(rows),
        "ids": [row["id"] for row in rows],
        "claim": token,
        "queued": str(MessageStatus.QUEUED),
    }
    connection = session.connection()  # autocommit: each statement is committed when run
    if connection.dialect.driver != "psycopg":
        return set(session.scalars(_WRITE_MANY, params))
    driver: Any = connection.connection.driver_connection  # psycopg.Connection
    with driver.cursor() as cursor:
        # prepared server-side after psycopg's prepare_threshold (None turns it off,
        # as PgBouncer's transaction pooling needs)
        cursor.execute(_WRITE_MANY_PSYCOPG, params)
        return {row[0] for row in cursor.fetchall()}


def _record(
    session: Session, token: str, over: list[_Attempt], due: datetime | None
) -> list[_Attempt]:
    """Write the outcomes of sends that are over, committed together; returns those
    written (not cancelled or re-claimed in the meantime)."""
    rows = []
    for attempt in over:
        message = attempt.message
        status, error, retry_at, attempts = _outcome(attempt, due)
        message.status, message.error = status, error
        message.sent_at = attempt.started if status == MessageStatus.SENT else None
        message.receipt = attempt.receipt or None
        rows.append(
            {
                "id": message.id,
                "status": status,
                "error": error[:2000] if error else None,
                "sent_at": message.sent_at,
                "subject": message.subject,
                "body": message.body,
                "attempts": attempts,
                "retry_at": retry_at,
                "receipt": message.receipt,
            }
        )
    written = _write(session, token, rows)
    for attempt in over:
        attempt.written = attempt.message.id in written
        attempt.recorded.set()
    return [attempt for attempt in over if attempt.written]


@contextmanager
def _async_commits(connection: Connection) -> Iterator[None]:
    """Commits on this connection do not wait for the disk, until the block ends.

    The status write is all that stands between a send and a resend, so it is
    committed as soon as it is known: a killed worker loses nothing committed this
    way (only a crash of the machine could), and a commit costs no fsync.
    """
    if connection.dialect.name == "postgresql":
        on, off = "SET synchronous_commit TO OFF", "RESET synchronous_commit"
    elif connection.dialect.name == "sqlite":
        previous = connection.exec_driver_sql("PRAGMA synchronous").scalar()
        on, off = "PRAGMA synchronous = OFF", f"PRAGMA synchronous = {int(previous or 0)}"
    else:
        yield
        return
    connection.exec_driver_sql(on)
    connection.commit()
    try:
        yield
    finally:
        connection.rollback()
        connection.exec_driver_sql(off)
        connection.commit()


@contextmanager
def _status_session() -> Iterator[Session]:
    """A session on a database connection of its own, with commits that do not wait
    for the disk; on PostgreSQL in autocommit: every statement stands alone, so a
    status write is one round trip (SQLite's may be the host's shared connection)."""
    with ExitStack() as stack:
        connection = stack.enter_context(get_state().db.engine.connect())
        if connection.dialect.name == "postgresql":
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        stack.enter_context(_async_commits(connection))
        session = Session(bind=connection, expire_on_commit=False)
        stack.callback(session.close)
        yield session


class _Writer:
    """Writes the statuses of sends that are over in a thread of its own, on a
    database connection of its own, while the worker's thread renders more.

    Used on PostgreSQL when a batch sends over several connections: whatever is over
    while a write is on its way goes in the next one (groups grow with the
    database's latency). A connection still sends nothing more before its status is
    committed. Groups written come back on ``written`` (``None`` once it stops;
    ``error`` then says why, if it failed).
    """

    def __init__(
        self, over: queue.SimpleQueue[_Attempt | None], token: str, due: datetime | None
    ) -> None:
        self.over = over
        self.written: queue.SimpleQueue[list[_Attempt] | None] = queue.SimpleQueue()
        self.error: BaseException | None = None
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        self.thread = threading.Thread(
            target=self._run, args=(app, token, due), name="engage-statuses", daemon=True
        )
        self.thread.start()

    def _run(self, app: Flask, token: str, due: datetime | None) -> None:
        try:
            with app.app_context(), _status_session() as session:
                while (first := self.over.get()) is not None:
                    group, stop = [first], False
                    while not stop:
                        try:
                            attempt = self.over.get_nowait()
                        except queue.Empty:
                            break
                        if attempt is None:
                            stop = True
                        else:
                            group.append(attempt)
                    _record(session, token, group, due)
                    self.written.put(group)
                    if stop:
                        return
        except BaseException as exc:  # raised again in the worker's thread
            self.error = exc
        finally:
            self.written.put(None)

    def stop(self) -> None:
        """Write what was handed over, then stop."""
        self.over.put(None)
        self.thread.join()


def _threaded(session: Session, messages: list[Message]) -> bool:
    """Statuses are written by a :class:`_Writer`: PostgreSQL, and a channel of the
    batch sends over several connections."""
    if session.get_bind().dialect.name != "postgresql":
        return False
    for name in {message.channel for message in messages}:
        try:
            if get_channel(name).parallel() > 1:
                return True
        except ValidationError:
            pass  # a channel no longer registered: those messages fail
    return False


def deliver_batch(
    *,
    limit: int = 500,
    broadcast_id: int | None = None,
    now: datetime | None = None,
    run: DeliveryRun | None = None,
) -> int:
    """Claim and deliver one batch; returns how many messages were processed.

    ``now`` is the moment retries are due by (``run_due(now)`` moves it forward).
    ``run``: send over its connections (else over connections opened for this batch).
    """
    token = claim_batch(limit, broadcast_id, now)
    if token is None:
        return 0
    with ExitStack() as stack:
        if run is None:
            run = stack.enter_context(DeliveryRun())
        session = stack.enter_context(_status_session())
        try:
            return _deliver_claimed(session, token, run, now)
        except BaseException:
            run.close()  # sends in flight are not written: no connection sends more
            raise


def _deliver_claimed(
    session: Session, token: str, run: DeliveryRun, due: datetime | None = None
) -> int:
    """Deliver the messages of one claim, committing statuses as they are known.

    A message to retry is due again after a backoff from ``due`` (default: now).
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    messages = list(
        session.scalars(select(Message).where(Message.claim == token).order_by(Message.id))
    )
    opted_out = {
        (customer_id, channel)
        for customer_id, channel in session.execute(
            select(Unsubscription.customer_id, Unsubscription.channel).where(
                Unsubscription.customer_id.in_({m.customer_id for m in messages})
            )
        )
    }
    session.commit()
    session.expunge_all()  # statuses are written with guarded UPDATEs below
    run.batches += 1
    in_flight: Counter[tuple[int | None, str]] = Counter()

    def recorded(over: list[_Attempt]) -> None:
        """Signals for the statuses written (after their commit)."""
        for attempt in over:
            message = attempt.message
            in_flight[message.customer_id, message.channel] -= 1
            if not attempt.written:
                continue
            if message.status == MessageStatus.SENT:
                signals.message_sent.send(app, message=message, customer=message.customer)
            elif message.status == MessageStatus.FAILED:
                signals.message_failed.send(
                    app, message=message, customer=message.customer, error=message.error
                )

    claim = _Claim(session, token, run, due, messages, opted_out, in_flight, recorded)
    if _threaded(session, messages):
        _deliver_threaded(claim)
    else:
        _deliver_here(claim)
    touched = sorted({m.broadcast_id for m in messages if m.broadcast_id is not None})
    finish_broadcasts(session, touched, utcnow())
    session.commit()
    return len(messages)


@dataclass
class _Claim:
    """One claimed batch on its way: what both ways of writing statuses work from."""

    session: Session
    token: str
    run: DeliveryRun
    due: datetime | None
    messages: list[Message]
    #: (customer id, channel) pairs opted out.
    opted_out: set[tuple[Any, str]]
    #: Sends per (customer id, channel) whose status is not written yet.
    in_flight: Counter[tuple[int | None, str]]
    #: Fires the signals of the statuses written.
    recorded: Callable[[list[_Attempt]], None]
    #: Templates by source (broadcast, automation step), read once per batch.
    cache: dict[Any, Source | None] = field(default_factory=dict)

    def caps(self, channel: str) -> bool:
        """Whether ``ENGAGE_FREQUENCY_CAP`` limits ``channel``."""
        return bool((current_app.config.get("ENGAGE_FREQUENCY_CAP") or {}).get(channel))

    def start(self, message: Message) -> tuple[_Attempt, Channel | None, Any]:
        """An attempt at ``message``, rendered for its channel (channel None: it is over
        already, ``error`` says why)."""
        attempt = _Attempt(message, message.attempts or 0, utcnow())
        try:
            if _over_cap(self.session, message, attempt.started):
                raise SkipMessage("frequency_cap")
            blocked = (message.customer_id, message.channel) in self.opted_out
            channel, prepared = _prepare(
                self.session, message, self.cache, blocked, attempt.receipt
            )
        except Exception as exc:  # classified in _outcome
            attempt.error = exc
            return attempt, None, None
        return attempt, channel, prepared


def _deliver_here(claim: _Claim) -> None:
    """Statuses written by the worker's thread, in groups, on the batch's session."""
    run, in_flight = claim.run, claim.in_flight
    settled: list[_Attempt] = []  # over, status not written yet (no send pending on it)

    def flush(wait: bool = False, force: bool = False) -> None:
        """Write the pool's sends that are over (see ``finished``) with what is settled."""
        nonlocal settled
        over = run.finished(wait=wait)
        if over or force:
            group, settled = settled + over, []
            if group:
                _record(claim.session, claim.token, group, claim.due)
                claim.recorded(group)

    for message in claim.messages:
        key = (message.customer_id, message.channel)
        if claim.caps(message.channel):
            while in_flight[key] > 0:  # the cap counts what was sent: wait for it
                flush(wait=True, force=True)
        in_flight[key] += 1
        attempt, channel, prepared = claim.start(message)
        if channel is None:
            settled.append(attempt)
        elif run.submit(channel, attempt, prepared):
            settled.append(attempt)
            flush(force=True)  # sent from this thread: written before it sends more
        else:
            flush()
    while run.pending:
        flush(wait=True)
    flush(force=True)


def _deliver_threaded(claim: _Claim) -> None:
    """Statuses written by a :class:`_Writer` while this thread renders and submits.

    Every attempt that is over goes to the writer (pool threads hand theirs over
    themselves); this thread keeps at most two sends per connection ahead of the
    statuses written, and fires the signals of what was written.
    """
    run, in_flight = claim.run, claim.in_flight
    writer = _Writer(run.over, claim.token, claim.due)
    unwritten = 0  # handed to the pool or the writer, status not written yet

    def collect(block: bool) -> None:
        nonlocal unwritten
        groups = [writer.written.get()] if block else []
        while True:
            try:
                groups.append(writer.written.get_nowait())
            except queue.Empty:
                break
        for group in groups:
            if group is None:
                raise writer.error or RuntimeError("the status writer stopped")
            unwritten -= len(group)
            claim.recorded(group)

    try:
        for message in claim.messages:
            key = (message.customer_id, message.channel)
            if claim.caps(message.channel):
                while in_flight[key] > 0:  # the cap counts what was sent: wait for it
                    collect(block=True)
            in_flight[key] += 1
            attempt, channel, prepared = claim.start(message)
            unwritten += 1
            if channel is None:
                run.over.put(attempt)
            elif run.submit(channel, attempt, prepared):
                run.over.put(attempt)
                while not attempt.recorded.is_set():  # sent here: written before more
                    collect(block=True)
            collect(block=unwritten >= 2 * max(run.threads, 1))
        while unwritten:
            collect(block=True)
        run.pending = 0  # every pool send of the batch is over (and written)
    finally:
        writer.stop()
