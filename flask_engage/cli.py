"""The ``flask engage`` command group."""

from __future__ import annotations

import time

import click
from flask import current_app
from flask.cli import with_appcontext


@click.group("engage", help="flask-engage: customers, segments, messages and jobs.")
def engage_cli() -> None:
    pass


@engage_cli.group("db", help="Engage's own database migrations.")
def db_group() -> None:
    pass


@db_group.command("upgrade")
@click.argument("revision", default="head")
@with_appcontext
def db_upgrade(revision: str) -> None:
    """Upgrade Engage's tables to REVISION (default: head)."""
    from .migrations import current, upgrade

    upgrade(revision)
    from .db import operation_session
    from .segments.service import ensure_default

    with operation_session() as session:
        ensure_default(session)
    click.echo(f"engage tables at revision {current()}")


@db_group.command("downgrade")
@click.argument("revision", default="-1")
@with_appcontext
def db_downgrade(revision: str) -> None:
    """Downgrade Engage's tables to REVISION (default: one step back)."""
    from .migrations import current, downgrade

    downgrade(revision)
    click.echo(f"engage tables at revision {current()}")


@db_group.command("current")
@with_appcontext
def db_current() -> None:
    """Print the revision Engage's tables are at."""
    from .migrations import current

    click.echo(current() or "none (run: flask engage db upgrade)")


@engage_cli.command("worker")
@click.option("--burst", is_flag=True, help="Process what is queued and due, then exit.")
@with_appcontext
def worker(burst: bool) -> None:
    """Run an RQ worker on ENGAGE_QUEUE, plus the schedule."""
    engage = current_app.extensions["engage"]
    if not current_app.config.get("ENGAGE_REDIS_URL"):
        click.echo("ENGAGE_REDIS_URL is not set: running what is due inline.")
    engage.work(burst=burst)


@engage_cli.command("recompute")
@click.argument("segment", required=False)
@with_appcontext
def recompute(segment: str | None) -> None:
    """Re-evaluate SEGMENT (id or slug), or every segment."""
    from .errors import NotFound

    engage = current_app.extensions["engage"]
    targets = [segment] if segment else [s.id for s in engage.segments()]
    joined = left = 0
    started = time.perf_counter()
    with click.progressbar(targets, label="Recomputing segments", show_pos=True) as bar:
        for target in bar:
            try:
                outcomes = engage.recompute(target)
            except NotFound as exc:
                raise click.ClickException(str(exc)) from None
            for outcome in outcomes:
                joined += outcome.joined
                left += outcome.left
    took = time.perf_counter() - started
    click.echo(f"{len(targets)} segment(s): {joined} joined, {left} left, took {took:.2f}s")


@engage_cli.command("vapid-keys")
def vapid_keys() -> None:
    """Print a new VAPID key pair for web push."""
    from .channels.webpush import generate_vapid_keys

    private, public = generate_vapid_keys()
    click.echo(f"ENGAGE_VAPID_PRIVATE_KEY={private}")
    click.echo(f"ENGAGE_VAPID_PUBLIC_KEY={public}")
    click.echo("ENGAGE_VAPID_SUBJECT=mailto:you@example.com")


@engage_cli.command("status")
@with_appcontext
def status() -> None:
    """Queue depth, failed jobs, outbox backlog, last tick and stale segments."""
    from .status import collect

    for key, value in collect().items():
        click.echo(f"{key:>18}: {value}")


# Data commands (seed-demo, import) live in their own module and attach to this group.
from . import cli_data  # noqa: E402,F401
