"""The dashboard: how much data there is, what was sent, and whether the machinery runs
(the schedule, the outbox, parked work, failing segments)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import current_app, flash, url_for
from flask_admin import AdminIndexView, expose

from ..db import host_session
from ..messages.audience import sent_per_day
from ..models import utcnow
from ..segments.browse import all_segments, totals
from .base import EngageView, EngageViewMixin, engage
from .charts import bar_chart

DAYS = 7


def render_dashboard(view: Any) -> Any:
    """The dashboard page, for Engage's own index view or a page of the host's Admin."""
    session = host_session()
    now = utcnow()
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    first_day = today - timedelta(days=DAYS - 1)
    sends = sent_per_day(session, first_day)
    labels = [(first_day + timedelta(days=i)).date().isoformat() for i in range(DAYS)]
    status = engage().status()
    interval = current_app.config["ENGAGE_RECOMPUTE_INTERVAL"]
    tick = status["last_tick"]
    return view.render(
        "engage_admin/dashboard.html",
        totals=totals(session, today),
        sends_week=sum(sends.values()),
        chart=bar_chart(labels, [sends.get(label, 0) for label in labels]),
        status=status,
        tick_age=None if tick is None else int((now - tick).total_seconds()),
        late_after=2 * interval,
        links={
            name: url_for(f"engage_{name}.index")
            for name in ("customers", "segments", "broadcasts", "automations")
        },
        retry_url=url_for(f"{view.endpoint}.retry"),
        segment_ids={s.slug: s.id for s in all_segments(session)},
    )


def retry(view: Any) -> Any:
    """Retry parked work, then show the dashboard again."""
    retried = engage().retry_parked()
    flash(
        f"{retried} parked item(s) retried." if retried else "Nothing was parked.",
        "success",
    )
    return view.back("index")


class DashboardIndexView(EngageViewMixin, AdminIndexView):
    """The index page of Engage's own Admin."""

    @expose("/")
    def index(self) -> Any:
        return render_dashboard(self)

    @expose("/retry-parked", methods=("POST",))
    def retry(self) -> Any:
        return retry(self)


class DashboardView(EngageView):
    """The dashboard, as a page of the host's Admin."""

    @expose("/")
    def index(self) -> Any:
        return render_dashboard(self)

    @expose("/retry-parked", methods=("POST",))
    def retry(self) -> Any:
        return retry(self)
