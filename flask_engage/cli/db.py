"""``flask engage db ...``: Engage's own migrations."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from ..db import operation_session
from ..migrations import current, downgrade, upgrade
from ..segments.service import ensure_default


@click.group("db", help="Engage's own database migrations.")
def db_group() -> None:
    pass


@db_group.command("upgrade")
@click.argument("revision", default="head")
@with_appcontext
def db_upgrade(revision: str) -> None:
    """Upgrade Engage's tables to REVISION (default: head)."""
    upgrade(revision)
    with operation_session() as session:
        ensure_default(session)
    click.echo(f"engage tables at revision {current()}")


@db_group.command("downgrade")
@click.argument("revision", default="-1")
@with_appcontext
def db_downgrade(revision: str) -> None:
    """Downgrade Engage's tables to REVISION (default: one step back)."""
    downgrade(revision)
    click.echo(f"engage tables at revision {current()}")


@db_group.command("current")
@with_appcontext
def db_current() -> None:
    """Print the revision Engage's tables are at."""
    click.echo(current() or "none (run: flask engage db upgrade)")
