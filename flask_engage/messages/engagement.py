"""Opens, clicks and reads of messages, recorded as customer events.

Each one becomes the event its channel names for it (``Email opened``, ``Email
clicked``, ``Push clicked``, ``In-app read``) for the message's customer, written
through :func:`~flask_engage.tracking.store` like any tracked event (segments,
conditions and automation triggers use it, segments are re-evaluated after the
commit), and marks the message's first open or click, which outcomes count
(:mod:`.outcomes`).

Privacy proxies and security scanners open and click too: a hit whose user agent
or method gives a machine away is recorded with ``machine: true`` and marks the
message's ``machine_opened_at`` / ``machine_clicked_at`` instead
(:func:`is_machine`; ``docs/engagement.md`` says what the numbers mean).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..channels import channel_names, get_channel
from ..models import Customer, Message, utcnow
from ..tracking import store

#: Kinds of engagement; each channel names the event it records for the kinds its
#: messages can report (``Channel.engagement``: ``{"opened": "Email opened"}``).
OPENED, CLICKED, READ = "opened", "clicked", "read"
#: The message columns the first hit of a kind marks: (by a person, by a machine).
#: A read is marked by the inbox itself (``read_at``), and has no user agent.
FIRST = {
    OPENED: ("opened_at", "machine_opened_at"),
    CLICKED: ("clicked_at", "machine_clicked_at"),
}

#: The longest user agent kept on an event.
MAX_USER_AGENT = 512
#: User agents of scanners, link previewers and scripts (people use browsers and mail apps).
_MACHINE_AGENTS = re.compile(
    r"bot\b|bot/|crawl|spider|scan|preview|python|curl/|wget|go-http|java/|okhttp|axios"
    r"|node-fetch|headless|barracuda|mimecast|proofpoint|symantec|forcepoint|trend ?micro"
    r"|sophos|fortinet|ironport|microsoft office/|ms-office|linkexpanding|facebookexternalhit",
    re.IGNORECASE,
)
#: Apple Mail Privacy Protection fetches every image of every email through a proxy
#: whose user agent is exactly this, whether or not anyone reads the email.
APPLE_PRIVACY_PROXY = "Mozilla/5.0"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_agent(user_agent: str | None) -> str:
    """A user agent as stored: control characters removed, at most 512 characters."""
    return _CONTROL.sub("", user_agent or "").strip()[:MAX_USER_AGENT]


def is_machine(user_agent: str | None, method: str = "GET") -> bool:
    """Whether a hit looks like a machine's: a ``HEAD`` request (scanners probing links),
    no user agent, Apple's privacy proxy, or a scanner, previewer or script."""
    agent = clean_agent(user_agent)
    if method.upper() == "HEAD" or not agent or agent == APPLE_PRIVACY_PROXY:
        return True
    return bool(_MACHINE_AGENTS.search(agent))


def record(
    session: Session,
    kind: str,
    message_id: int,
    *,
    url: str | None = None,
    user_agent: str | None = None,
    method: str = "GET",
    via: str | None = None,
    now: datetime | None = None,
) -> bool:
    """Record one ``opened``, ``clicked`` or ``read`` of a message, in ``session``'s
    transaction, as the event its channel names for it (``Email clicked``...).

    ``via``: how the hit came (``"links"``, ``"report"``: ``Channel.tracking``).
    Returns False, recording nothing, when there is no such message, its channel
    does not report that kind (that way), or its customer was forgotten.
    """
    conn = session.connection()
    messages, customers = Message.__table__, Customer.__table__
    first = FIRST.get(kind, ())
    row = conn.execute(
        select(
            messages.c.channel,
            messages.c.broadcast_id,
            messages.c.automation_id,
            messages.c.step,
            customers.c.external_id,
            *(messages.c[column] for column in first),
        )
        .join(customers, customers.c.id == messages.c.customer_id)
        .where(messages.c.id == message_id)
    ).first()
    if row is None or row.channel not in channel_names():
        return False
    channel = get_channel(row.channel)
    event = channel.engagement.get(kind)
    if event is None or (via is not None and channel.tracking != via):
        return False
    now = now or utcnow()
    properties: dict[str, Any] = {"message_id": message_id}
    if row.broadcast_id is not None:
        properties["broadcast_id"] = row.broadcast_id
    elif row.automation_id is not None:
        properties["automation_id"] = row.automation_id
        properties["step"] = row.step
    if url is not None:
        properties["url"] = _CONTROL.sub("", url)
    machine = False
    if first:
        machine = is_machine(user_agent, method)
        properties["user_agent"] = clean_agent(user_agent)
        properties["machine"] = machine
    store(session, {}, [(row.external_id, event, properties, now)], conn=conn)
    column = first[1 if machine else 0] if first else None
    if column is not None and row._mapping[column] is None:  # its first of the kind
        conn.execute(
            update(messages)
            .where(messages.c.id == message_id, messages.c[column].is_(None))
            .values({column: now})
        )
    return True
