"""Engage's own Alembic migrations, with their own version table.

``flask engage db upgrade`` runs them. Tables made by ``engage.create_all()`` and
never migrated are adopted (stamped at head) when their schema matches this
version's. Hosts that autogenerate their own migrations (Flask-Migrate) are made
to skip every ``engage_*`` table.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from flask import Flask, appcontext_pushed
from sqlalchemy import Connection, inspect

from ..db import get_state
from ..errors import StateError
from ..models import metadata

VERSION_TABLE = "engage_alembic_version"
HERE = Path(__file__).parent


def alembic_config(output: io.StringIO | None = None) -> Config:
    """An Alembic config pointing at these migrations (run inside the app context);
    ``output`` receives the SQL of an offline (``--sql``) run."""
    config = Config(output_buffer=output)
    config.set_main_option("script_location", str(HERE))
    return config


def upgrade(revision: str = "head", *, sql: bool = False) -> str | None:
    """Upgrade to ``revision``; with ``sql``, return the SQL instead of running it."""
    if not sql:
        command.upgrade(alembic_config(), revision)
        return None
    start = current()
    output = io.StringIO()
    try:
        command.upgrade(
            alembic_config(output), f"{start}:{revision}" if start else revision, sql=True
        )
    except CommandError as exc:
        if "--sql mode" in str(exc) and get_state().db.engine.dialect.name == "sqlite":
            raise StateError(
                "upgrade --sql: SQLite cannot alter these tables without a live database "
                "(Alembic's batch mode copies them); run the upgrade itself, or generate "
                "the SQL against PostgreSQL"
            ) from None
        raise
    return output.getvalue()


def check_revision(revision: str) -> None:
    """Raise Alembic's ``CommandError`` for an unknown revision (relative ones pass)."""
    if revision[:1] in "+-" or any(mark in revision for mark in "@:"):
        return
    ScriptDirectory.from_config(alembic_config()).get_revisions(revision)


def downgrade(revision: str = "-1") -> None:
    command.downgrade(alembic_config(), revision)


def stamp(revision: str = "head") -> None:
    """Record ``revision`` as the database's without running any migration."""
    command.stamp(alembic_config(), revision)


def head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current() -> str | None:
    """The revision the database is at (None when never migrated)."""
    with get_state().db.engine.connect() as connection:
        return _context(connection).get_current_revision()


def _context(connection: Connection, **opts: Any) -> MigrationContext:
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE, **opts})


@dataclass
class Revision:
    """One migration, for ``flask engage db history``."""

    revision: str
    down_revision: str | None
    doc: str
    is_head: bool
    is_current: bool

    def __str__(self) -> str:
        marks = [m for m, on in (("head", self.is_head), ("current", self.is_current)) if on]
        flags = f" ({', '.join(marks)})" if marks else ""
        return f"{self.down_revision or '<base>'} -> {self.revision}{flags}: {self.doc}"


def history() -> list[Revision]:
    """Every migration, newest first."""
    scripts = ScriptDirectory.from_config(alembic_config())
    at = current()
    return [
        Revision(
            script.revision,
            script.down_revision if isinstance(script.down_revision, str | None) else None,
            (script.doc or "").splitlines()[0] if script.doc else "",
            script.is_head,
            script.revision == at,
        )
        for script in scripts.walk_revisions()
    ]


def is_engage_table(name: str | None) -> bool:
    return bool(name) and (str(name).startswith("engage_") or name == VERSION_TABLE)


def schema_differences(connection: Connection) -> list[Any]:
    """How the database's ``engage_*`` tables differ from this version's models."""

    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        return type_ != "table" or (is_engage_table(name) and name != VERSION_TABLE)

    context = _context(connection, include_name=include_name, compare_type=True)
    return list(compare_metadata(context, metadata))


def adopt() -> str | None:
    """Stamp tables made by ``create_all()`` (no version yet) at head when they match.

    Returns the revision stamped, or None when there was nothing to adopt. Tables
    that differ are refused with one line saying what to do.
    """
    with get_state().db.engine.connect() as connection:
        if _context(connection).get_current_revision() is not None:
            return None
        names = inspect(connection).get_table_names()
        if not any(is_engage_table(n) and n != VERSION_TABLE for n in names):
            return None
        differences = schema_differences(connection)
    if differences:
        raise StateError(
            f"engage tables exist without a migration version and differ from this version's "
            f"schema ({len(differences)} difference(s), first: {_describe(differences[0])}); "
            "if an earlier flask-engage made them, run `flask engage db stamp REVISION` with "
            "its revision (see `flask engage db history`), then upgrade"
        )
    stamp("head")
    return head()


def _describe(difference: Any) -> str:
    """One autogenerate difference in a few words (``add_column engage_customers.x``)."""
    if isinstance(difference, list):  # modify_* differences come in lists
        difference = difference[0]
    kind = difference[0]
    if kind in ("add_column", "remove_column"):
        return f"{kind} {difference[2]}.{difference[3].name}"
    if kind.startswith("modify_"):
        return f"{kind} {difference[2]}.{difference[3]}"
    return f"{kind} {getattr(difference[1], 'name', None) or ''}".strip()


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
