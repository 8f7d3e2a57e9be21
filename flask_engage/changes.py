"""What changed about a customer, in the terms segment filters read.

A tracked write records, on each ``evaluate`` outbox row it adds, what it changed
about that customer (:class:`Changes`); the job that drains the outbox then
re-checks only the segments whose filters read it (see
:meth:`flask_engage.segments.nodes.Node.inputs` for the tokens). ``None`` means
anything may have changed (a new, restored or merged customer): every segment is
re-checked.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

ATTRIBUTE = "attribute:"
EVENT = "event:"
LIST = "list"
CHANNEL = "channel"
#: What reads (or a change to) anything at all is said to touch.
ANYTHING = "*"


@dataclass(frozen=True)
class Changes:
    """What changed about the customers being evaluated.

    Incremental evaluation then re-checks only the segments whose filters read it
    (through segment references too), and the time-based ones the schedule has not
    recomputed for ``ENGAGE_RECOMPUTE_INTERVAL`` (their answers move with the clock
    alone, which the schedule's recomputes follow). Pass ``None`` instead when
    anything may have changed (a new, deleted or merged customer): every segment is
    re-checked.
    """

    #: Attribute names set or removed (``email`` for the email).
    attributes: Collection[str] = ()
    #: Names of the events tracked.
    events: Collection[str] = ()
    #: Whether list memberships changed.
    lists: bool = False
    #: Whether opt-outs or push subscriptions changed.
    channels: bool = False

    def tokens(self) -> frozenset[str]:
        """The :meth:`~.segments.nodes.Node.inputs` tokens this change touches."""
        return frozenset(
            [
                *(ATTRIBUTE + name for name in self.attributes),
                *(EVENT + name for name in self.events),
                *([LIST] if self.lists else []),
                *([CHANNEL] if self.channels else []),
            ]
        )

    @classmethod
    def from_tokens(cls, tokens: Iterable[str]) -> Changes:
        """The change these tokens describe (unknown tokens are ignored)."""
        attributes, events, lists, channels = set(), set(), False, False
        for token in tokens:
            if token.startswith(ATTRIBUTE):
                attributes.add(token[len(ATTRIBUTE) :])
            elif token.startswith(EVENT):
                events.add(token[len(EVENT) :])
            elif token == LIST:
                lists = True
            elif token == CHANNEL:
                channels = True
        return cls(frozenset(attributes), frozenset(events), lists, channels)

    def __or__(self, other: Changes) -> Changes:
        return Changes.from_tokens(self.tokens() | other.tokens())


def note(changed: dict[Any, Changes | None], keys: Iterable[Any], change: Changes) -> None:
    """Record ``change`` for each key as well (a key marked "anything" stays so)."""
    for key in keys:
        if key in changed:
            known = changed[key]
            changed[key] = None if known is None else known | change
        else:
            changed[key] = change


def union(changes: Iterable[Changes | None]) -> Changes | None:
    """Everything these changes touch together; None if any of them is None."""
    tokens: set[str] = set()
    for change in changes:
        if change is None:
            return None
        tokens |= change.tokens()
    return Changes.from_tokens(tokens)


def dump(changes: Changes | None) -> str | None:
    """The stored form of a change (a JSON list of tokens; None for anything)."""
    return None if changes is None else json.dumps(sorted(changes.tokens()))


def load(stored: str | None) -> Changes | None:
    """A change back from :func:`dump`; a value it cannot read means anything."""
    if stored is None:
        return None
    try:
        tokens = json.loads(stored)
    except ValueError:
        return None
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        return None
    return Changes.from_tokens(tokens)
