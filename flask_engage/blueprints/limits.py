"""A per-visitor rate limit on the browser endpoints that write (``ENGAGE_BROWSER_RATE_LIMIT``).

Signed-in visitors can call ``/browser/track``, ``/push/subscribe``,
``/push/unsubscribe`` and ``/inbox/<id>/read`` as often as they like from a
script. Each of those endpoints allows one visitor ``ENGAGE_BROWSER_RATE_LIMIT``
requests (``"60/minute"``); more get 429 with a ``Retry-After`` header.

When the host app uses Flask-Limiter (``app.extensions["limiter"]``), the count is
kept in its storage (Redis or Memcached: shared by every process). Otherwise Engage
keeps the count in this process's memory, so with N processes a visitor gets up to
N times the limit. Flask-Limiter's switch ``RATELIMIT_ENABLED = False`` turns this
limit off too.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from weakref import WeakKeyDictionary

from flask import Flask, current_app, request

from ..config import parse_rate_limit
from .common import ApiError

#: Visitors remembered by the built-in limit before expired entries are swept.
SWEEP_AT = 10_000


@dataclass
class _Counters:
    """GCRA state per (endpoint, visitor): the time their allowance is next fully used."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    due: dict[tuple[str, str], float] = field(default_factory=dict)

    def hit(self, key: tuple[str, str], count: int, period: int, now: float) -> float:
        """Record a request; return 0 when allowed, else seconds until one would be."""
        interval = period / count
        with self.lock:
            due = max(self.due.get(key, now), now)
            wait = due + interval - now - period
            if wait > 0:
                return wait
            self.due[key] = due + interval
            if len(self.due) > SWEEP_AT:
                for stale in [k for k, t in self.due.items() if t <= now]:
                    del self.due[stale]
            return 0.0


_counters: WeakKeyDictionary[Flask, _Counters] = WeakKeyDictionary()
_counters_lock = threading.Lock()


def _built_in(app: Flask) -> _Counters:
    with _counters_lock:
        counters = _counters.get(app)
        if counters is None:
            counters = _counters[app] = _Counters()
        return counters


@lru_cache(maxsize=16)
def _rate(value: str) -> tuple[int, int]:
    return parse_rate_limit(value, "ENGAGE_BROWSER_RATE_LIMIT")


def _flask_limiter(app: Flask) -> Any:
    """The host's Flask-Limiter instance (a set of them since 3.x), or None."""
    limiters = app.extensions.get("limiter")
    if isinstance(limiters, set | frozenset | list | tuple):
        return next(iter(limiters), None)
    return limiters


def _with_flask_limiter(
    limiter: Any, key: tuple[str, str], count: int, period: int
) -> float | None:
    """Count the request in Flask-Limiter's storage; None when the host turned it off."""
    if not getattr(limiter, "enabled", True):
        return None
    from limits import RateLimitItemPerSecond  # installed with Flask-Limiter

    item = RateLimitItemPerSecond(count, period)
    if limiter.limiter.hit(item, "flask-engage", *key):
        return 0.0
    reset_at, _ = limiter.limiter.get_window_stats(item, "flask-engage", *key)
    return max(reset_at - time.time(), 1.0)


def limit_visitor(customer_id: str) -> None:
    """Count a request of ``customer_id`` to the current endpoint; ApiError(429) when over."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    setting = app.config["ENGAGE_BROWSER_RATE_LIMIT"]
    if setting is None or app.config.get("RATELIMIT_ENABLED") is False:
        return
    count, period = _rate(setting)
    key = (request.endpoint or request.path, customer_id)
    limiter = _flask_limiter(app)
    if limiter is not None:
        wait = _with_flask_limiter(limiter, key, count, period)
    else:
        wait = _built_in(app).hit(key, count, period, time.monotonic())
    if wait:
        raise ApiError(
            429,
            f"rate limit: more than {setting} requests to this endpoint; retry later",
            headers={"Retry-After": str(math.ceil(wait))},
        )
