"""Lists as users see them: create, update, archive, delete, look up, and their numbers.

A list is found by instance, id or slug (an all-digit text is an id first, as for
segments). Slugs follow the name, and segment filters that name a list by slug
follow a rename. Archiving (Engage's ``DELETE /v1/lists/<id>``) keeps the members
but takes no new subscribers; deleting removes the list and its members. Both are
refused while something still depends on the list.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from ..errors import InvalidFilter, NotFound, StateError, ValidationError
from ..models import (
    Automation,
    Broadcast,
    BroadcastStatus,
    CustomerList,
    ListChange,
    ListMember,
    ListMemberStatus,
    Segment,
    utcnow,
)
from ..segments.compiler import read_filter
from ..segments.nodes import ListCondition, walk
from ..segments.service import _rename_references, check_name
from ..values import SLUG, row_id

#: Longest description (Engage allows 255; people may write more here).
MAX_DESCRIPTION = 2000
MAX_URL = 2048
#: Broadcasts that will still send: a list they go to cannot be archived or deleted.
UNSENT = (BroadcastStatus.SCHEDULED, BroadcastStatus.QUEUED, BroadcastStatus.SENDING)
#: Broadcasts that went (or are going) out, for ``broadcast_count``.
SENT = (
    BroadcastStatus.SENDING,
    BroadcastStatus.SENT,
    BroadcastStatus.PARTIAL,
    BroadcastStatus.FAILED,
)


def find_list(session: Session, ref: Any) -> CustomerList | None:
    """A list by instance, id or slug (an all-digit text is an id first); None when
    there is none."""
    if isinstance(ref, CustomerList):
        return session.get(CustomerList, ref.id)
    if isinstance(ref, bool) or not isinstance(ref, int | str) or ref == "":
        return None
    list_id = row_id(ref)
    found = None if list_id is None else session.get(CustomerList, list_id)
    if found is None and isinstance(ref, str) and SLUG.match(ref):
        found = session.scalar(select(CustomerList).where(CustomerList.slug == ref))
    return found


def get_list(session: Session, ref: Any, field: str = "list") -> CustomerList:
    """:func:`find_list`, or :class:`NotFound` naming ``field``."""
    found = find_list(session, ref)
    if found is None:
        raise NotFound(f"{field}: no list {ref!r}")
    return found


def open_list(session: Session, ref: Any, field: str = "list") -> CustomerList:
    """A list that takes subscribers: :class:`StateError` when it is archived."""
    found = get_list(session, ref, field)
    if found.archived_at is not None:
        raise StateError(f"{field}: list {found.name!r} is archived and takes no new subscribers")
    return found


def public_list(session: Session, slug: str) -> CustomerList | None:
    """The list of a public page (by slug only), or None unless it is ``public``."""
    if not SLUG.match(slug) or len(slug) > 200:
        return None
    return session.scalar(
        select(CustomerList).where(CustomerList.slug == slug, CustomerList.public.is_(True))
    )


def check_description(value: Any, field: str = "description") -> str | None:
    """Text of at most :data:`MAX_DESCRIPTION` characters; blank means none."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{field}: expected text", field=field)
    if len(value) > MAX_DESCRIPTION:
        raise ValidationError(f"{field}: longer than {MAX_DESCRIPTION} characters", field=field)
    return value.strip() or None


def check_redirect_url(value: Any, field: str = "redirect_url") -> str | None:
    """An absolute ``http(s)`` URL people are sent to after subscribing; blank means none."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_URL:
        raise ValidationError(
            f"{field}: expected a URL of at most {MAX_URL} characters", field=field
        )
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValidationError(f"{field}: a URL must not contain spaces", field=field)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(f"{field}: expected an absolute http(s) URL", field=field)
    return value


def check_flag(value: Any, field: str) -> bool:
    """A boolean (not a truthy string)."""
    if not isinstance(value, bool):
        raise ValidationError(f"{field}: expected true or false", field=field)
    return value


def create_list(
    session: Session,
    name: Any,
    *,
    description: Any = None,
    public: Any = False,
    double_optin: Any = False,
    redirect_url: Any = None,
) -> CustomerList:
    """Insert a validated list."""
    name, slug = check_name(session, name, CustomerList, "list")
    created = CustomerList(
        name=name,
        slug=slug,
        description=check_description(description),
        public=check_flag(public, "public"),
        double_optin=check_flag(double_optin, "double_optin"),
        redirect_url=check_redirect_url(redirect_url),
    )
    session.add(created)
    session.flush()
    return created


def update_list(
    session: Session,
    found: CustomerList,
    *,
    name: Any = None,
    description: Any = None,
    public: Any = None,
    double_optin: Any = None,
    redirect_url: Any = None,
) -> CustomerList:
    """Change what is given (``None`` leaves a field; ``""`` clears a description or
    redirect URL). A new name brings a new slug, and segment filters naming the list
    by its old slug follow it."""
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"], changes["slug"] = check_name(session, name, CustomerList, "list", found)
    if description is not None:
        changes["description"] = check_description(description)
    if public is not None:
        changes["public"] = check_flag(public, "public")
    if double_optin is not None:
        changes["double_optin"] = check_flag(double_optin, "double_optin")
    if redirect_url is not None:
        changes["redirect_url"] = check_redirect_url(redirect_url)
    old_slug = found.slug
    for column, value in changes.items():
        setattr(found, column, value)
    if found.slug != old_slug:
        for segment in session.scalars(select(Segment)):
            renamed = _rename_references(segment.filters, old_slug, found.slug, "list")
            if renamed != segment.filters:
                segment.filters = renamed
    session.flush()
    return found


def _segments_using(session: Session, found: CustomerList) -> list[str]:
    names = []
    for segment in session.scalars(select(Segment)):
        try:
            nodes = walk(read_filter(segment.filters))
        except InvalidFilter:  # a stored filter that no longer reads refers to nothing
            continue
        refs = {node.ref for node in nodes if isinstance(node, ListCondition)}
        if refs & {found.id, str(found.id), found.slug}:
            names.append(segment.name)
    return names


def _broadcasts_using(session: Session, found: CustomerList, statuses: Any) -> list[str]:
    query = select(Broadcast.name, Broadcast.list_ids).where(Broadcast.status.in_(statuses))
    return [name for name, ids in session.execute(query) if found.id in (ids or [])]


def _automations_using(session: Session, found: CustomerList, active_only: bool) -> list[str]:
    query = select(Automation.name).where(Automation.trigger_list_id == found.id)
    if active_only:
        query = query.where(Automation.active.is_(True))
    return list(session.scalars(query))


def _refuse_if_used(found: CustomerList, action: str, users: list[str]) -> None:
    if users:
        raise StateError(
            f"list {found.name!r} cannot be {action}: still used by {', '.join(sorted(users))}"
        )


def archive_list(
    session: Session, found: CustomerList, *, archived: bool = True, now: datetime | None = None
) -> CustomerList:
    """Archive a list (no new subscribers; members stay), or bring it back.

    Refused while a scheduled, queued or sending broadcast, or an active automation,
    uses the list.
    """
    if archived and found.archived_at is None:
        users = _broadcasts_using(session, found, UNSENT)
        users += _automations_using(session, found, active_only=True)
        _refuse_if_used(found, "archived", users)
        found.archived_at = now or utcnow()
    elif not archived:
        found.archived_at = None
    session.flush()
    return found


def delete_list(session: Session, found: CustomerList) -> None:
    """Delete a list with its members and history, unless a segment filter, an
    automation or an unsent broadcast uses it."""
    users = _segments_using(session, found)
    users += _automations_using(session, found, active_only=False)
    users += _broadcasts_using(session, found, (BroadcastStatus.DRAFT, *UNSENT))
    _refuse_if_used(found, "deleted", users)
    for table in (ListMember, ListChange):
        session.execute(delete(table).where(table.list_id == found.id))
    session.delete(found)
    session.flush()


def all_lists(session: Session, *, archived: bool = False) -> list[CustomerList]:
    """Lists by name; archived ones only when asked."""
    query = select(CustomerList).order_by(CustomerList.name)
    if not archived:
        query = query.where(CustomerList.archived_at.is_(None))
    return list(session.scalars(query))


def subscriber_counts(session: Session, list_ids: list[int]) -> dict[int, int]:
    """Members subscribed or pending confirmation, per list (Engage's ``subscriber_count``)."""
    if not list_ids:
        return {}
    rows = session.execute(
        select(ListMember.list_id, func.count())
        .where(
            ListMember.list_id.in_(list_ids),
            ListMember.status.in_((ListMemberStatus.SUBSCRIBED, ListMemberStatus.PENDING)),
        )
        .group_by(ListMember.list_id)
    )
    return {list_id: count for list_id, count in rows}


def broadcast_counts(session: Session, list_ids: list[int]) -> dict[int, int]:
    """Broadcasts sent (or sending) to each list (Engage's ``broadcast_count``)."""
    wanted = set(list_ids)
    counted: Counter[int] = Counter()
    for ids in session.scalars(select(Broadcast.list_ids).where(Broadcast.status.in_(SENT))):
        counted.update(set(ids or []) & wanted)
    return dict(counted)


def list_names(session: Session, list_ids: list[int]) -> list[str]:
    """Names of lists by id (for display; deleted ones are left out)."""
    if not list_ids:
        return []
    return list(
        session.scalars(
            select(CustomerList.name)
            .where(CustomerList.id.in_(list_ids))
            .order_by(CustomerList.name)
        )
    )
