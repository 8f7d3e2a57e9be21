"""``flask engage forget ID``: erase a customer, after a confirmation naming what goes."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from ..customers import Erasure, erasure_preview, forget
from ..db import host_session
from ..errors import EngageError


def describe(erasure: Erasure) -> str:
    """``3 events, 2 segment memberships, ...`` for a confirmation or a summary."""
    parts = [
        f"{erasure.events} event(s)",
        f"{erasure.memberships} segment membership(s)",
        f"{erasure.subscriptions} unsubscription(s)",
        f"{erasure.runs} automation run(s)",
        f"{erasure.push_subscriptions} push subscription(s)",
    ]
    return (
        ", ".join(parts)
        + f"; {erasure.messages} message(s) stay for counts, without customer or content"
    )


@click.command("forget")
@click.argument("customer_id")
@click.option("--yes", is_flag=True, help="Erase without asking for confirmation.")
@with_appcontext
def forget_customer(customer_id: str, yes: bool) -> None:
    """Erase customer CUSTOMER_ID (the host's id) with its events, memberships,
    unsubscriptions, automation runs and push subscriptions (e.g. a GDPR request)."""
    session = host_session()
    try:
        preview = erasure_preview(session, customer_id)
    except EngageError as exc:
        raise click.ClickException(str(exc)) from None
    if preview is None:
        raise click.ClickException(f"no customer {customer_id!r}: nothing to erase")
    if not yes:
        click.confirm(
            f"Erase customer {customer_id!r} and {describe(preview)}?", abort=True, err=True
        )
    erased = forget(session, [customer_id])
    session.commit()
    click.echo(f"erased customer {customer_id!r}: {describe(erased)}")
