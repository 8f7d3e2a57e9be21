"""Handing work to RQ: the Redis connection, a circuit breaker, enqueueing.

Redis is never the source of truth: the outbox table is. When Redis cannot be
reached the error is logged, Redis is skipped for :data:`REDIS_RETRY_AFTER`
seconds (a loop of commits must not pay the connect timeout each time), and the
work waits in the outbox for the schedule or the next worker.
"""

from __future__ import annotations

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
