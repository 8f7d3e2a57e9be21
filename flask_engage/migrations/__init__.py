"""Engage's own Alembic migrations, with their own version table.

``flask engage db upgrade`` runs them. Hosts that autogenerate their own
migrations (Flask-Migrate) are made to skip every ``engage_*`` table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from flask import Flask, appcontext_pushed

from ..db import get_state

VERSION_TABLE = "engage_alembic_version"
HERE = Path(__file__).parent


def alembic_config() -> Config:
    """An Alembic config pointing at these migrations (run inside the app context)."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    return config


def upgrade(revision: str = "head") -> None:
    command.upgrade(alembic_config(), revision)


def downgrade(revision: str = "-1") -> None:
    command.downgrade(alembic_config(), revision)


def current() -> str | None:
    """The revision the database is at (None when never migrated)."""
    with get_state().db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def is_engage_table(name: str | None) -> bool:
    return bool(name) and (name.startswith("engage_") or name == VERSION_TABLE)


def skip_in_host_autogenerate(app: Flask) -> None:
    """Make Flask-Migrate's autogenerate ignore ``engage_*`` tables, whatever the
    order in which the host sets up Flask-Migrate and Engage."""

    def patch(sender: Flask, **_: Any) -> None:
        migrate = sender.extensions.get("migrate")
        if migrate is None or getattr(migrate, "_engage_patched", False):
            return
        args = migrate.configure_args
        host_filter = args.get("include_name")

        def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
            if type_ == "table" and is_engage_table(name):
                return False
            return host_filter(name, type_, parent_names) if host_filter else True

        args["include_name"] = include_name
        migrate._engage_patched = True

    patch(app)
    appcontext_pushed.connect(patch, app, weak=False)
