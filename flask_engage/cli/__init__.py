"""The ``flask engage`` command group: ``db`` migrations, the worker, data and customer
commands."""

from __future__ import annotations

import click

from .customers import forget_customer
from .data import import_csv, seed_demo
from .db import db_group
from .worker import recompute, status, vapid_keys, worker


@click.group("engage", help="flask-engage: customers, segments, messages and jobs.")
def engage_cli() -> None:
    pass


for command in (
    db_group,
    worker,
    recompute,
    status,
    vapid_keys,
    seed_demo,
    import_csv,
    forget_customer,
):
    engage_cli.add_command(command)

__all__ = ["engage_cli"]
