"""The admin panel (Flask-Admin): dashboard, customers, segment builder, lists,
broadcasts, automations; one module per view, reads in the services, plain words for people.

When the host already has a Flask-Admin ``Admin`` on the app (``app.extensions["admin"]``)
when ``engage.init_app`` runs, Engage adds its views to it; otherwise Engage creates
its own ``Admin`` at ``ENGAGE_ADMIN_URL``. A host that wants Engage inside its own
admin must therefore create its ``Admin(app)`` (or call ``admin.init_app(app)``)
before calling ``engage.init_app``. A module-level ``Admin()`` used by an app
factory works for any number of apps: its ``init_app`` registers Engage's views
again, and Engage does not add them twice.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from flask import Blueprint, Flask, current_app
from flask_admin import Admin
from flask_admin.theme import Bootstrap4Theme

from .automations import AutomationsView
from .broadcasts import BroadcastsView
from .customers import CustomersView
from .dashboard import DashboardIndexView, DashboardView
from .lists import ListsView
from .security import csrf_token
from .segments import SegmentsView
from .words import channel_label, dejargon, explain, plain, status_colour, who

#: Serves the admin's templates and its static builder/chart files.
assets = Blueprint(
    "engage_admin_assets",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)


def local(moment: datetime | None) -> str:
    """A moment in ``ENGAGE_TIMEZONE``, to the minute."""
    if moment is None:
        return ""
    zone = ZoneInfo(current_app.config["ENGAGE_TIMEZONE"])
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")


#: Template filters of the admin's pages.
FILTERS = {
    "engage_who": who,
    "engage_channel": channel_label,
    "engage_plain": plain,
    "engage_explain": explain,
    "engage_dejargon": dejargon,
    "engage_status_colour": status_colour,
    "engage_local": local,
}


def init_admin(app: Flask) -> None:
    """Mount Engage's admin views on the host's Admin, or on an Admin of Engage's own."""
    admins = app.extensions.get("admin") or []
    base = app.config["ENGAGE_ADMIN_URL"].rstrip("/")
    if admins:
        admin = admins[0]
        prefix = admin.url.rstrip("/") + "/engage"
        if "engage_dashboard" in app.blueprints:
            # A module-level Admin shared by an app factory: its init_app registered the
            # views Engage added for an earlier app on this one already.
            _register_assets(app, prefix)
            return
        admin.add_view(
            DashboardView(name="Engage", endpoint="engage_dashboard", url=f"{prefix}/dashboard")
        )
    else:
        prefix = base
        admin = Admin(
            app,
            name="Engage",
            url=base,
            index_view=DashboardIndexView(name="Dashboard", url=base, endpoint="engage_admin"),
            theme=Bootstrap4Theme(),
        )
    admin.add_view(
        CustomersView(name="Customers", endpoint="engage_customers", url=f"{prefix}/customers")
    )
    admin.add_view(
        SegmentsView(name="Segments", endpoint="engage_segments", url=f"{prefix}/segments")
    )
    admin.add_view(ListsView(name="Lists", endpoint="engage_lists", url=f"{prefix}/lists"))
    admin.add_view(
        BroadcastsView(name="Broadcasts", endpoint="engage_broadcasts", url=f"{prefix}/broadcasts")
    )
    admin.add_view(
        AutomationsView(
            name="Automations", endpoint="engage_automations", url=f"{prefix}/automations"
        )
    )
    _register_assets(app, prefix)


def _register_assets(app: Flask, prefix: str) -> None:
    app.register_blueprint(assets, url_prefix=f"{prefix}/assets")
    app.jinja_env.globals.setdefault("engage_csrf_token", csrf_token)
    for name, function in FILTERS.items():
        app.jinja_env.filters.setdefault(name, function)
