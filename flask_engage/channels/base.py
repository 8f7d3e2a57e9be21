"""What a channel is, and the one registry of channels.

A channel (email, web push, in-app...) is one class in this package: its name,
whether its messages need a subject, which customers it can reach (as SQL on
``engage_customers``), how a send step or broadcast for it is checked, and how
one rendered message is delivered. Everything else (the ``channel`` filter
condition, broadcasts, automation send steps, delivery, unsubscribe tokens, the
admin's forms) reads this registry: a new channel is a new module here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sqlalchemy import ColumnElement, true
from sqlalchemy.orm import Session

from ..changes import ANYTHING
from ..errors import EngageError, ValidationError
from ..messages.templates import Rendered, check_template
from ..models import Customer, Message


class SkipMessage(EngageError):
    """A message is not sent, for a reason that is not a failure (the message says why)."""


class RetryLater(EngageError):
    """Delivery failed for a reason that may pass (a server down, a 4xx SMTP reply).

    The message stays queued and is tried again with backoff, then marked failed.
    ``after``: seconds the receiver asked to wait (a ``Retry-After``); the retry
    comes no sooner than that, and no sooner than the backoff.
    """

    def __init__(self, message: str, *, after: float | None = None) -> None:
        super().__init__(message)
        self.after = after


class DeliveryFailed(EngageError):
    """Delivery failed for good (the receiver refused the message); the message is
    failed with this error's text as it is, so it must name no customer data."""


@dataclass
class Outgoing:
    """One rendered message on its way to a channel."""

    session: Session
    message: Message
    customer: Customer
    rendered: Rendered
    #: The customer's unsubscribe link (``None`` for channels without opt-out links).
    unsubscribe_url: str | None
    #: Where the client reports a click (``tracking = "report"``); None when not tracked.
    report_url: str | None = None
    #: What the templates were rendered with (channels that render more templates use it).
    context: dict[str, Any] = field(default_factory=dict)
    #: The channel's own settings of the send (beyond subject and body).
    options: Mapping[str, Any] = field(default_factory=dict)
    #: What the channel reports about this attempt (a webhook's ``status`` and
    #: ``latency_ms``), stored on the message as ``receipt``: facts of the delivery,
    #: never customer data or the receiver's answer. Filled also when it raises.
    receipt: dict[str, Any] = field(default_factory=dict)


class Channel(ABC):
    """One way of reaching a customer. Subclass, then :func:`register` an instance."""

    #: The name used in filters, broadcasts and send steps (``"email"``).
    name: ClassVar[str]
    #: What the admin shows.
    label: ClassVar[str]
    #: Messages need a subject (an email's subject, a notification's title).
    needs_subject: ClassVar[bool] = False
    #: Customers can opt out of it (``channel`` conditions, unsubscribe links).
    opt_out: ClassVar[bool] = True
    #: Settings a send takes beyond ``subject`` and ``body``.
    options: ClassVar[tuple[str, ...]] = ()
    #: Bodies with HTML tags are HTML (autoescaped, with a text part). False: every
    #: body is plain text, rendered as written (a webhook's JSON).
    html_bodies: ClassVar[bool] = True
    #: How opens and clicks are tracked: ``"links"`` (links go through signed click
    #: URLs, HTML gets an open pixel), ``"report"`` (the client reports a click to
    #: ``Outgoing.report_url``), or None.
    tracking: ClassVar[str | None] = None
    #: The events its messages' engagement is recorded as, by kind (``"opened"``,
    #: ``"clicked"``, ``"read"``): ``{"clicked": "Push clicked"}``.
    engagement: ClassVar[Mapping[str, str]] = {}

    def reachable(self) -> ColumnElement[bool]:
        """SQL condition on ``engage_customers``: the customer has an address here."""
        return true()

    def reads(self) -> Sequence[str]:
        """What :meth:`reachable` reads, as the tokens of
        :class:`~flask_engage.changes.Changes` (``attribute:phone``, ``channel`` for
        push subscriptions): a segment on this channel is re-checked after a tracked
        change when one of them changed. Default: nothing for a channel that
        everyone can receive, anything (``*``) for one with its own ``reachable``."""
        overridden = type(self).reachable is not Channel.reachable
        return (ANYTHING,) if overridden else ()

    def check(
        self, spec: Mapping[str, Any], path: str = "", noun: str = "message"
    ) -> dict[str, Any]:
        """Validate a send's ``subject``, ``body`` and options; return the stored form.

        ``path`` prefixes error fields (``steps[2].send.``); ``noun`` names the thing
        in messages (``a email broadcast needs a subject``).
        """
        subject, body = spec.get("subject"), spec.get("body")
        if self.needs_subject and not (isinstance(subject, str) and subject.strip()):
            raise ValidationError(
                f"{path}subject: a {self.name} {noun} needs a subject", field=f"{path}subject"
            )
        if not isinstance(body, str) or not body.strip():
            raise ValidationError(f"{path}body: a {noun} needs a body", field=f"{path}body")
        if subject is not None:
            check_template(subject, f"{path}subject")
        check_template(body, f"{path}body")
        checked: dict[str, Any] = {"channel": self.name, "body": body}
        if subject is not None:
            checked["subject"] = subject
        checked.update(self.check_options(spec, path))
        return checked

    def check_options(self, spec: Mapping[str, Any], path: str) -> dict[str, Any]:
        """Validate the channel's own settings of a send (none by default)."""
        return {}

    @contextmanager
    def connect(self) -> Iterator[Any]:
        """A connection shared by one batch of sends (none by default)."""
        yield None

    def parallel(self) -> int:
        """Connections a delivery run opens to this channel at once, each used by a
        thread of its own that calls :meth:`transmit` (1: one connection, sends in the
        worker's own thread). Only channels whose ``transmit`` needs neither the
        session nor the outgoing message's ORM objects may return more than 1."""
        return 1

    def prepare(self, outgoing: Outgoing) -> Any:
        """The part of a send done in the worker's own thread (with the session);
        returns what :meth:`transmit` takes. Default: ``outgoing`` itself."""
        return outgoing

    def transmit(self, prepared: Any, connection: Any) -> None:
        """Deliver what :meth:`prepare` returned (from a pool thread when
        :meth:`parallel` is above 1); raises as :meth:`send` does. Default: ``send``."""
        self.send(prepared, connection)

    @abstractmethod
    def send(self, outgoing: Outgoing, connection: Any) -> None:
        """Deliver one message.

        Raise :class:`SkipMessage` to skip it, :class:`RetryLater` for a failure
        that may pass, :class:`DeliveryFailed` (or any other error) to fail it.
        """


_registry: dict[str, Channel] = {}


def register(channel: Channel) -> Channel:
    """Add a channel to the registry (a later one of the same name replaces it)."""
    _registry[channel.name] = channel
    return channel


def channel_names() -> tuple[str, ...]:
    """Names of every registered channel, in registration order."""
    return tuple(_registry)


def opt_out_channels() -> tuple[str, ...]:
    """Names of the channels customers can unsubscribe from."""
    return tuple(name for name, channel in _registry.items() if channel.opt_out)


def get_channel(name: Any, field: str = "channel") -> Channel:
    """The registered channel called ``name``; ValidationError naming ``field`` otherwise."""
    channel = _registry.get(name) if isinstance(name, str) else None
    if channel is None:
        raise ValidationError(
            f"{field}: expected one of {', '.join(_registry)}, got {name!r}", field=field
        )
    return channel


def all_channels() -> list[Channel]:
    """Every registered channel (for forms and docs)."""
    return list(_registry.values())
