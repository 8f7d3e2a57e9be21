"""Reading automations for people (the admin): the list with their trigger segments."""

from __future__ import annotations

from sqlalchemy import Select, select

from ..models import Automation, Segment


def automations_with_segments() -> Select[Automation, str]:
    """Every automation with the name of its trigger segment (page by ``Automation.id``)."""
    return select(Automation, Segment.name).outerjoin(
        Segment, Segment.id == Automation.trigger_segment_id
    )
