"""``flask engage db ...``: Engage's own migrations, with one-line errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
from alembic.util import CommandError
from flask.cli import with_appcontext
from sqlalchemy.exc import SQLAlchemyError

from ..db import operation_session
from ..errors import EngageError
from ..migrations import adopt, check_revision, current, downgrade, history, stamp, upgrade
from ..segments.service import ensure_default


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Alembic's and the database's errors as one line (``Error: ...``), no traceback."""
    try:
        yield
    except (CommandError, EngageError) as exc:
        raise click.ClickException(str(exc).strip().splitlines()[0]) from None
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        message = str(cause).strip().splitlines()[0] if str(cause).strip() else type(exc).__name__
        raise click.ClickException(f"database: {message}") from None


@click.group("db", help="Engage's own database migrations (version table engage_alembic_version).")
def db_group() -> None:
    pass


@db_group.command("upgrade")
@click.argument("revision", default="head")
@click.option("--sql", is_flag=True, help="Print the SQL instead of running it.")
@with_appcontext
def db_upgrade(revision: str, sql: bool) -> None:
    """Upgrade Engage's tables to REVISION (default: head).

    Tables made by ``engage.create_all()`` and never migrated are stamped at head
    first when their schema matches this version's.
    """
    with one_line_errors():
        if sql:
            script = upgrade(revision, sql=True)
            if script and script.strip():
                click.echo(script, nl=False)
            else:
                click.echo(f"-- engage tables already at {current()}: nothing to run")
            return
        check_revision(revision)
        adopted = adopt()
        if adopted:
            click.echo(f"engage tables made by create_all() match revision {adopted}: stamped")
        upgrade(revision)
        with operation_session() as session:
            ensure_default(session)
        click.echo(f"engage tables at revision {current()}")


@db_group.command("downgrade")
@click.argument("revision", default="-1")
@with_appcontext
def db_downgrade(revision: str) -> None:
    """Downgrade Engage's tables to REVISION (default: one step back)."""
    with one_line_errors():
        downgrade(revision)
        click.echo(f"engage tables at revision {current() or 'base'}")


@db_group.command("stamp")
@click.argument("revision", default="head")
@with_appcontext
def db_stamp(revision: str) -> None:
    """Record REVISION (default: head) as the tables' revision, running no migration."""
    with one_line_errors():
        stamp(revision)
        click.echo(f"engage tables stamped at revision {current()}")


@db_group.command("current")
@with_appcontext
def db_current() -> None:
    """Print the revision Engage's tables are at."""
    with one_line_errors():
        click.echo(current() or "none (run: flask engage db upgrade)")


@db_group.command("history")
@with_appcontext
def db_history() -> None:
    """List Engage's migrations, newest first."""
    with one_line_errors():
        for revision in history():
            click.echo(str(revision))
