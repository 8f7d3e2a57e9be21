"""Engage's settings: every ``ENGAGE_*`` key with its default, and the start-up checks.

``init_app`` applies :data:`DEFAULTS` with ``app.config.setdefault`` and then
:func:`check_config`: settings that could only fail later, deep inside a job,
are refused at start-up with a :class:`~flask_engage.errors.ConfigurationError`
naming the key. Settings that leave only a part of Engage unable to work
(:func:`startup_warnings`) and unknown ``ENGAGE_*`` keys (:func:`unknown_keys`)
are logged as warnings. Every key is documented in ``docs/configuration.md`` (a test
keeps the two in step).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, MutableMapping
from typing import Any
from zoneinfo import ZoneInfo

from .errors import ConfigurationError

#: The package's version (``flask_engage.__version__``).
VERSION = "0.2.0"

DEFAULTS: dict[str, Any] = {
    #: RQ's Redis URL. ``None``: jobs run inline, after the host's commit.
    "ENGAGE_REDIS_URL": None,
    #: Name of Engage's RQ queue.
    "ENGAGE_QUEUE": "engage",
    #: Where the blueprint (API, unsubscribe, push, inbox, ``engage.js``) mounts.
    "ENGAGE_URL_PREFIX": "/engage",
    #: Where Engage's own Flask-Admin mounts when the host has none.
    "ENGAGE_ADMIN_URL": "/engage/admin",
    #: ``callable() -> bool``: who may use the admin. ``None``: only in debug or testing.
    "ENGAGE_ADMIN_ACCESS": None,
    #: The host's login page (a URL or an endpoint) where the admin sends visitors who
    #: are not signed in. ``None``: Flask-Login's ``login_view``, else a 403.
    "ENGAGE_ADMIN_LOGIN_URL": None,
    #: ``callable() -> customer id or None`` for the current request. ``None``: Flask-Login.
    "ENGAGE_IDENTITY": None,
    #: Keys of the server-to-server API: ``"key"`` (Bearer) or ``"key:secret"`` (also Basic).
    "ENGAGE_API_KEYS": (),
    #: From address of emails; falls back to ``MAIL_DEFAULT_SENDER``.
    "ENGAGE_MAIL_SENDER": None,
    #: Web Push private key (``flask engage vapid-keys`` makes a pair).
    "ENGAGE_VAPID_PRIVATE_KEY": None,
    #: Web Push public key, served at ``<prefix>/push/key``.
    "ENGAGE_VAPID_PUBLIC_KEY": None,
    #: Web Push contact, e.g. ``mailto:you@example.com``.
    "ENGAGE_VAPID_SUBJECT": None,
    #: Time zone of calendar windows and of ``wait until`` steps without a customer zone.
    "ENGAGE_TIMEZONE": "UTC",
    #: Seconds between re-evaluations of time-based segments.
    "ENGAGE_RECOMPUTE_INTERVAL": 300,
    #: Seconds between the schedule's ticks (``run_due``).
    "ENGAGE_SCHEDULE_INTERVAL": 60,
    #: Recipients per send job.
    "ENGAGE_BATCH_SIZE": 500,
    #: Largest HTTP API body accepted, in bytes.
    "ENGAGE_MAX_BODY": 1024 * 1024,
    #: Most events in one ``POST /api/track`` batch.
    "ENGAGE_MAX_BATCH": 1000,
    #: Most values in one ``in`` / ``not_in`` list of a segment filter (checked at save).
    "ENGAGE_MAX_LIST_VALUES": 1000,
    #: Absolute base of links in messages; ``None``: ``SERVER_NAME`` + ``PREFERRED_URL_SCHEME``.
    "ENGAGE_BASE_URL": None,
    #: SMTP connections one worker sends email over at once, each from a thread of its
    #: own; a crash may resend one message per connection. 1: one connection, no thread.
    "ENGAGE_SMTP_CONNECTIONS": 4,
    #: Seconds a worker holds claimed messages before another may take them over.
    "ENGAGE_SEND_LEASE": 300,
    #: Per-channel caps, e.g. ``{"email": (3, 86400)}``; ``None``: no cap.
    "ENGAGE_FREQUENCY_CAP": None,
    #: Inline mode: run the schedule after requests (at most once per interval, any
    #: number of processes), so scheduled work happens without a worker.
    "ENGAGE_INLINE_SCHEDULE": True,
    #: Accept push endpoints on private, loopback and link-local hosts (and plain
    #: ``http`` to them): for a push service on the developer's machine, never in production.
    "ENGAGE_PUSH_ALLOW_PRIVATE": False,
    #: Event names ``/browser/track`` accepts (a list); ``None``: any name.
    "ENGAGE_BROWSER_EVENTS": None,
    #: Requests per signed-in visitor and endpoint to the browser endpoints that write
    #: (``"60/minute"``; units second, minute, hour, day); ``None``: no limit.
    "ENGAGE_BROWSER_RATE_LIMIT": "60/minute",
    #: Key that signs webhook requests (``X-Engage-Signature``); a webhook send is
    #: refused at save while it is unset.
    "ENGAGE_WEBHOOK_SECRET": None,
    #: Accept webhook URLs on private, loopback and link-local hosts: for receivers on
    #: your own network or machine only.
    "ENGAGE_WEBHOOK_ALLOW_PRIVATE": False,
    #: Seconds a webhook request may take to connect, and to answer.
    "ENGAGE_WEBHOOK_TIMEOUT": 10,
    #: Emails carry an open pixel; opens are recorded as ``Email opened`` events.
    "ENGAGE_TRACK_OPENS": True,
    #: Links in emails go through signed click URLs (``Email clicked`` events), and
    #: push notifications report their clicks (``Push clicked``).
    "ENGAGE_TRACK_CLICKS": True,
    #: Days events are kept: older ones are deleted by the schedule, in batches.
    #: ``None``: events are kept forever. Segments reading further back are reported
    #: by ``flask engage status``.
    "ENGAGE_EVENT_RETENTION_DAYS": None,
    #: Events deleted per retention batch (one short transaction each).
    "ENGAGE_EVENT_RETENTION_BATCH": 5000,
}

#: Settings that must be whole numbers >= 1 (numeric strings from the environment are accepted).
POSITIVE_INTEGERS = (
    "ENGAGE_RECOMPUTE_INTERVAL",
    "ENGAGE_SCHEDULE_INTERVAL",
    "ENGAGE_BATCH_SIZE",
    "ENGAGE_MAX_BODY",
    "ENGAGE_MAX_BATCH",
    "ENGAGE_MAX_LIST_VALUES",
    "ENGAGE_SEND_LEASE",
    "ENGAGE_SMTP_CONNECTIONS",
    "ENGAGE_WEBHOOK_TIMEOUT",
    "ENGAGE_EVENT_RETENTION_BATCH",
)


def apply_defaults(config: MutableMapping[str, Any]) -> None:
    """Set every missing ``ENGAGE_*`` key to its default, then check and normalise them."""
    for key, value in DEFAULTS.items():
        config.setdefault(key, value)
    check_config(config)


def check_config(config: MutableMapping[str, Any]) -> None:
    """Refuse settings that would only fail later; turn numeric strings into numbers."""
    for key in POSITIVE_INTEGERS:
        config[key] = _positive_integer(key, config[key])
    try:
        ZoneInfo(str(config["ENGAGE_TIMEZONE"]))
    except Exception:  # ZoneInfoNotFoundError, but also OSError for names like "America"
        raise ConfigurationError(
            f"ENGAGE_TIMEZONE: unknown time zone {config['ENGAGE_TIMEZONE']!r}"
        ) from None
    _check_api_keys(config["ENGAGE_API_KEYS"])
    for key in (
        "ENGAGE_PUSH_ALLOW_PRIVATE",
        "ENGAGE_WEBHOOK_ALLOW_PRIVATE",
        "ENGAGE_TRACK_OPENS",
        "ENGAGE_TRACK_CLICKS",
    ):
        config[key] = _boolean(key, config[key])
    secret = config["ENGAGE_WEBHOOK_SECRET"]
    if secret is not None and (not isinstance(secret, str) or not secret.strip()):
        raise ConfigurationError("ENGAGE_WEBHOOK_SECRET: expected a non-blank string or None")
    login = config["ENGAGE_ADMIN_LOGIN_URL"]
    if login is not None and (not isinstance(login, str) or not login.strip()):
        raise ConfigurationError(
            "ENGAGE_ADMIN_LOGIN_URL: expected a URL or an endpoint name, or None"
        )
    if config["ENGAGE_EVENT_RETENTION_DAYS"] is not None:
        config["ENGAGE_EVENT_RETENTION_DAYS"] = _positive_integer(
            "ENGAGE_EVENT_RETENTION_DAYS", config["ENGAGE_EVENT_RETENTION_DAYS"]
        )
    _check_browser_events(config["ENGAGE_BROWSER_EVENTS"])
    if config["ENGAGE_BROWSER_RATE_LIMIT"] is not None:
        parse_rate_limit(config["ENGAGE_BROWSER_RATE_LIMIT"], "ENGAGE_BROWSER_RATE_LIMIT")


def _positive_integer(key: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{key}: expected a whole number >= 1, got {value!r}")
    return value


def _check_api_keys(keys: Any) -> None:
    entries = [keys] if isinstance(keys, str) else keys
    if not isinstance(entries, list | tuple | set | frozenset):
        raise ConfigurationError(
            f"ENGAGE_API_KEYS: expected a list of keys, got {type(keys).__name__}"
        )
    for index, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise ConfigurationError(f"ENGAGE_API_KEYS[{index}]: expected a string")
        key, colon, secret = entry.partition(":")
        if not key.strip() or (colon and not secret.strip()):
            raise ConfigurationError(
                f"ENGAGE_API_KEYS[{index}]: a key (and a secret after ':') must not be blank"
            )


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def _boolean(key: str, value: Any) -> bool:
    """A bool, also from an environment string ("true", "0"...); anything else is refused."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigurationError(f"{key}: expected true or false, got {value!r}")


def _check_browser_events(events: Any) -> None:
    if events is None:
        return
    if isinstance(events, str) or not isinstance(events, list | tuple | set | frozenset):
        raise ConfigurationError(
            f"ENGAGE_BROWSER_EVENTS: expected a list of event names or None, got {events!r}"
        )
    for name in events:
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(f"ENGAGE_BROWSER_EVENTS: {name!r} is not an event name")


_RATE = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(\d*)\s*(second|minute|hour|day)s?\s*$", re.I)
_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def parse_rate_limit(value: Any, key: str = "rate limit") -> tuple[int, int]:
    """``"60/minute"``, ``"10 per second"`` or ``"100/5 minutes"`` as (requests, seconds)."""
    match = _RATE.match(value) if isinstance(value, str) else None
    if match is None or int(match[1]) < 1 or int(match[2] or 1) < 1:
        raise ConfigurationError(
            f'{key}: expected a rate such as "60/minute" (second, minute, hour or day),'
            f" got {value!r}"
        )
    return int(match[1]), int(match[2] or 1) * _SECONDS[match[3].lower()]


def startup_warnings(config: Mapping[str, Any]) -> list[str]:
    """Settings without which part of Engage cannot work: logged by ``init_app``.

    Tracking, segments and the admin work without them, so they are warnings, not
    errors; every email would fail (no ``SECRET_KEY``) until it is set. (A missing or
    malformed link base is checked by ``messages.urls.check_link_base``.)
    """
    notes = []
    if not config.get("SECRET_KEY"):
        notes.append(
            "SECRET_KEY is not set: unsubscribe links cannot be signed, so every email "
            "would fail; set SECRET_KEY"
        )
    return notes


def unknown_keys(config: Mapping[str, Any]) -> list[str]:
    """``ENGAGE_*`` keys that Engage does not read, each with a suggestion when one is close."""
    known = set(DEFAULTS)
    notes = []
    for key in sorted(k for k in config if k.startswith("ENGAGE_") and k not in known):
        close = difflib.get_close_matches(key, sorted(known), n=1)
        notes.append(f"{key} (did you mean {close[0]}?)" if close else key)
    return notes
