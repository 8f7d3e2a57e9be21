"""Handing work to RQ: the Redis connection, a circuit breaker, enqueueing.

Redis is never the source of truth: the outbox table is. When Redis cannot be
reached the error is logged, Redis is skipped for :data:`REDIS_RETRY_AFTER`
seconds (a loop of commits must not pay the connect timeout each time), and the
work waits in the outbox for the schedule or the next worker.

The host's commits do not wait for Redis: :func:`request_drain_soon` hands the
drain request to a notifier thread of the process (:class:`Notifier`).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Retry

from ..db import log

#: Seconds before each retry of a failed job (RQ ``Retry``).
JOB_RETRY_INTERVALS = [10, 60, 300]
#: After Redis failed, skip it for this many seconds.
REDIS_RETRY_AFTER = 5.0
#: How long a drain request stays pending if its job is lost (the schedule drains anyway).
DRAIN_FLAG_TTL = 60

_clients: dict[str, Redis] = {}
_down_until: dict[str, float] = {}


def is_inline(app: Flask | None = None) -> bool:
    """True without ``ENGAGE_REDIS_URL``: work runs in this process, after commit."""
    return not (app or current_app).config.get("ENGAGE_REDIS_URL")


def redis_connection(app: Flask | None = None) -> Redis | None:
    """The Redis client for ``ENGAGE_REDIS_URL`` (None in inline mode); fails fast."""
    url = (app or current_app).config.get("ENGAGE_REDIS_URL")
    if not url:
        return None
    if url not in _clients:
        _clients[url] = Redis.from_url(url, socket_connect_timeout=1, socket_timeout=5)
    return _clients[url]


def get_queue(app: Flask | None = None) -> Queue | None:
    """Engage's RQ queue (None in inline mode)."""
    connection = redis_connection(app)
    if connection is None:
        return None
    return Queue((app or current_app).config["ENGAGE_QUEUE"], connection=connection)


def _url() -> str:
    return str(current_app.config["ENGAGE_REDIS_URL"])


def redis_recently_down() -> bool:
    """True while the circuit breaker keeps Redis out after a failure."""
    return _down_until.get(_url(), 0.0) > time.monotonic()


def _mark(exc: BaseException | None) -> None:
    if exc is None:
        _down_until.pop(_url(), None)
        return
    _down_until[_url()] = time.monotonic() + REDIS_RETRY_AFTER
    log.warning("flask-engage: could not reach Redis (%s); work stays in the outbox", exc)


def enqueue(func: Callable[..., Any], *args: Any, job_id: str | None = None) -> bool:
    """Enqueue a job with retries; False (and a log line) if Redis is unreachable."""
    queue = get_queue()
    if queue is None or redis_recently_down():
        return False
    retry = Retry(max=len(JOB_RETRY_INTERVALS), interval=JOB_RETRY_INTERVALS)
    try:
        queue.enqueue(func, *args, job_id=job_id, retry=retry)
    except (RedisError, OSError) as exc:
        _mark(exc)
        return False
    _mark(None)
    return True


def drain_flag() -> str:
    """The Redis key that says a drain job is queued."""
    return f"engage:{current_app.config['ENGAGE_QUEUE']}:drain-pending"


def request_drain(job: Callable[[], Any]) -> bool:
    """Make sure one drain ``job`` is queued: a Redis ``SET NX`` when one already is.

    The flag is cleared when a drain job starts (work committed while it runs gets
    a job of its own) and expires in case a job is lost. False when Redis is down.
    """
    connection = redis_connection()
    if connection is None or redis_recently_down():
        return False
    try:
        first = connection.set(drain_flag(), 1, nx=True, ex=DRAIN_FLAG_TTL)
    except (RedisError, OSError) as exc:
        _mark(exc)
        return False
    return enqueue(job) if first else True


def clear_drain_request() -> None:
    """Called by a starting drain job: later commits queue another one."""
    connection = redis_connection()
    if connection is not None:
        try:
            connection.delete(drain_flag())
        except (RedisError, OSError) as exc:
            _mark(exc)


class Notifier:
    """A daemon thread of this process that asks Redis for drain jobs.

    A host's commit only notes that its app wants a drain (no network on the
    request thread); the thread then calls :func:`request_drain` in that app's
    context. Requests arriving while it talks to Redis are served by its next
    round trip, which follows their commits, so the job it queues sees their rows.
    Nothing depends on the thread: if Redis is down (logged, circuit breaker) or
    the process exits first, the rows wait in the outbox for the schedule or the
    next worker. A forked child starts with no pending requests and its own thread.
    """

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._condition = threading.Condition()
        self._wanted: dict[Flask, Callable[[], Any]] = {}
        self._busy = False
        self._thread: threading.Thread | None = None

    def request(self, app: Flask, job: Callable[[], Any]) -> None:
        """Ask for a drain ``job`` of ``app`` soon; returns at once."""
        with self._condition:
            self._wanted[app] = job
            self._ensure_thread()
            self._condition.notify_all()

    def wait(self, timeout: float | None = 5.0) -> bool:
        """Block until every request made so far has been sent (or failed and been
        logged); False if ``timeout`` seconds passed first."""
        with self._condition:
            if self._wanted:
                self._ensure_thread()
            return self._condition.wait_for(lambda: not (self._wanted or self._busy), timeout)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="flask-engage-notifier", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: bool(self._wanted))
                wanted, self._wanted = self._wanted, {}
                self._busy = True
            try:
                for app, job in wanted.items():
                    try:
                        with app.app_context():
                            request_drain(job)
                    except Exception:  # the outbox keeps the work; the thread goes on
                        log.exception("flask-engage: could not request a drain job")
            finally:
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()


_notifier = Notifier()
atexit.register(_notifier.wait, 2.0)


def request_drain_soon(job: Callable[[], Any]) -> None:
    """:func:`request_drain` from the notifier thread: the caller does not wait for
    Redis (used after the host's commits)."""
    _notifier.request(current_app._get_current_object(), job)  # type: ignore[attr-defined]


def wait_for_notifications(timeout: float | None = 5.0) -> bool:
    """Wait until the drain requests of this process's commits have reached Redis
    (or failed): before a worker starts, and in tests that look at the queue."""
    return _notifier.wait(timeout)
