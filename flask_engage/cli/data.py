"""``flask engage seed-demo`` and ``flask engage import``."""

from __future__ import annotations

import time
from pathlib import Path

import click
from flask.cli import with_appcontext

from .. import demo
from ..errors import EngageError
from ..importer import import_customers


@click.command("seed-demo")
@click.option(
    "--customers",
    default=3000,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="How many demo customers to create.",
)
@click.option("--once", is_flag=True, help="Do nothing if demo data is already there.")
@click.option("--seed", "seed_value", default=7, show_default=True, help="Random seed.")
@with_appcontext
def seed_demo(customers: int, once: bool, seed_value: int) -> None:
    """Create demo customers, events, segments, an automation and a broadcast draft."""
    if once and demo.is_seeded():
        click.echo("Demo data already there (--once): nothing to do.")
        return
    started = time.perf_counter()
    with click.progressbar(length=customers, label="Seeding customers", show_pos=True) as bar:
        result = demo.seed(customers, seed_value=seed_value, progress=bar.update)
    took = time.perf_counter() - started
    click.echo(f"{result.customers} customers, {result.events} events in {took:.1f}s")
    for segment in result.segments:
        click.echo(f"  {segment.name}: {segment.member_count} members")


@click.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--id-column", default="id", show_default=True, help="Column with the customer id.")
@click.option(
    "--email-column",
    default="email",
    show_default=True,
    help="Column with the email address (ignored when absent).",
)
@click.option("--dry-run", is_flag=True, help="Check every row and write nothing.")
@click.option(
    "--list",
    "list_ref",
    metavar="SLUG",
    help="Also subscribe every imported customer to this list (id or slug); "
    "those who unsubscribed from it stay unsubscribed.",
)
@with_appcontext
def import_csv(
    csv_file: Path, id_column: str, email_column: str, dry_run: bool, list_ref: str | None
) -> None:
    """Import customers from CSV_FILE: one row per customer, other columns become attributes."""
    with csv_file.open(newline="", encoding="utf-8-sig") as stream:
        lines = max(sum(1 for _ in stream) - 1, 0)
    started = time.perf_counter()
    with csv_file.open(newline="", encoding="utf-8-sig") as stream:
        with click.progressbar(length=lines, label="Importing customers", show_pos=True) as bar:
            try:
                result = import_customers(
                    stream,
                    id_column=id_column,
                    email_column=email_column,
                    dry_run=dry_run,
                    progress=bar.update,
                    list_ref=list_ref,
                )
            except EngageError as exc:
                raise click.ClickException(str(exc)) from None
    for error in result.errors:
        click.echo(str(error), err=True)
    verb = "would be imported (dry run, nothing written)" if dry_run else "imported"
    took = time.perf_counter() - started
    into = f" into list {list_ref!r}" if list_ref else ""
    click.echo(
        f"{result.imported} customers {verb}{into}, {len(result.errors)} rows with errors, "
        f"took {took:.2f}s"
    )
    if result.errors:  # the good rows are in; the exit status still tells a script
        raise SystemExit(1)
