"""``flask engage worker``, ``recompute``, ``status`` and ``vapid-keys``."""

from __future__ import annotations

import logging
import time
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from ..channels.webpush import generate_vapid_keys
from ..errors import NotFound
from ..status import collect_status


def _engage() -> Any:
    return current_app.extensions["engage"]


@click.command("worker")
@click.option("--burst", is_flag=True, help="Process what is queued and due, then exit.")
@click.option(
    "--queue",
    "queues",
    multiple=True,
    help="Also listen on this RQ queue (repeatable); ENGAGE_QUEUE always comes first.",
)
@click.option("--name", default=None, help="The worker's name (default: RQ's).")
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option("--max-jobs", type=click.IntRange(min=1), help="Exit after this many jobs.")
@with_appcontext
def worker(
    burst: bool, queues: tuple[str, ...], name: str | None, log_level: str, max_jobs: int | None
) -> None:
    """Run an RQ worker on ENGAGE_QUEUE, plus the schedule (one tick per interval).

    SIGTERM (or Ctrl-C) lets the current job finish, then stops.
    """
    logging.getLogger("flask_engage").setLevel(log_level.upper())
    config = current_app.config
    if not config.get("ENGAGE_REDIS_URL"):
        click.echo("ENGAGE_REDIS_URL is not set: running what is due inline.")
    else:
        click.echo(
            f"flask-engage worker: queue {config['ENGAGE_QUEUE']}, "
            f"schedule every {config['ENGAGE_SCHEDULE_INTERVAL']}s" + (" (burst)" if burst else "")
        )
    _engage().work(burst=burst, queues=queues, name=name, log_level=log_level, max_jobs=max_jobs)


@click.command("recompute")
@click.argument("segment", required=False)
@with_appcontext
def recompute(segment: str | None) -> None:
    """Re-evaluate SEGMENT (id or slug), or every segment."""
    engage = _engage()
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


@click.command("vapid-keys")
def vapid_keys() -> None:
    """Print a new VAPID key pair for web push."""
    private, public = generate_vapid_keys()
    click.echo(f"ENGAGE_VAPID_PRIVATE_KEY={private}")
    click.echo(f"ENGAGE_VAPID_PUBLIC_KEY={public}")
    click.echo("ENGAGE_VAPID_SUBJECT=mailto:you@example.com")


def status_lines(facts: dict[str, Any]) -> list[tuple[str, str]]:
    """``engage.status()`` as (label, value) lines for people."""
    config = current_app.config
    tick = facts["last_tick"]
    lines = [("mode", "inline (no ENGAGE_REDIS_URL)" if facts["mode"] == "inline" else "redis")]
    if facts["mode"] != "inline":
        jobs = facts.get("queue")
        queue = f"{config['ENGAGE_QUEUE']}: {jobs} job(s)" if jobs is not None else "unreachable"
        lines += [("queue", queue), ("failed jobs", str(facts.get("failed_jobs")))]
    interval = 2 * config["ENGAGE_RECOMPUTE_INTERVAL"]
    lines += [
        ("last tick", tick.isoformat(timespec="seconds") if tick else "never"),
        ("schedule", "ok" if facts["schedule_ok"] else f"LATE: no tick in the last {interval}s"),
        ("outbox backlog", str(facts["outbox"])),
        ("parked", str(facts["parked"])),
        ("queued messages", str(facts["queued_messages"])),
        ("stale segments", ", ".join(facts["stale_segments"]) or "none"),
        (
            "failing segments",
            "; ".join(f"{slug}: {error}" for slug, error in facts["failing_segments"].items())
            or "none",
        ),
    ]
    if current_app.config["ENGAGE_EVENT_RETENTION_DAYS"] is not None:
        warnings = facts["retention_warnings"]
        lines.append(
            (
                "past retention",
                "; ".join(f"{slug}: {why}" for slug, why in warnings.items()) or "none",
            )
        )
    return lines


@click.command("status")
@click.option(
    "--check",
    is_flag=True,
    help="Exit with status 1 when the schedule is late, work is parked or a segment fails.",
)
@with_appcontext
def status(check: bool) -> None:
    """Queue, failed jobs, outbox backlog, parked work, last tick, failing segments."""
    facts = collect_status()
    for label, value in status_lines(facts):
        click.echo(f"{label:>18}: {value}")
    if check and (not facts["schedule_ok"] or facts["parked"] or facts["failing_segments"]):
        raise SystemExit(1)
