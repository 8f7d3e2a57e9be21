"""Reading automations for people (the admin): the list with their trigger segments."""

from __future__ import annotations

from sqlalchemy import Select, func, select

from ..models import Automation, CustomerList, Segment


def automations_with_segments() -> Select[Automation, str]:
    """Every automation with the name of its trigger segment, or list (page by
    ``Automation.id``)."""
    return (
        select(Automation, func.coalesce(Segment.name, CustomerList.name))
        .outerjoin(Segment, Segment.id == Automation.trigger_segment_id)
        .outerjoin(CustomerList, CustomerList.id == Automation.trigger_list_id)
    )
