"""The functions RQ runs (it imports them by name); each runs in the app context.

Every job takes ids (or nothing) and is idempotent: the outbox and the message
claims decide what is left to do, so a job run twice does nothing twice.
"""

from __future__ import annotations

from flask import current_app

from ..messages.delivery import deliver_batch
from .dispatch import clear_drain_request
from .outbox import drain_outbox
from .runner import advance_automations, enqueue_deliveries
from .schedule import recompute_one, run_due


def job_drain_outbox() -> int:
    """Process the outbox, advance the runs it started, and queue the sends."""
    clear_drain_request()
    done, _ = drain_outbox()
    advance_automations()
    enqueue_deliveries(job_deliver_batch)
    return done


def job_deliver_batch() -> int:
    """Deliver one batch of queued messages."""
    return deliver_batch(limit=current_app.config["ENGAGE_BATCH_SIZE"])


def job_recompute(segment_id: int, trigger: bool = True) -> None:
    """Recompute one segment (``trigger``: start the automations its changes trigger)."""
    recompute_one(segment_id, trigger=trigger)
    advance_automations()
    enqueue_deliveries(job_deliver_batch)


def job_run_due() -> dict[str, int]:
    """``run_due`` now (what a burst worker does after the queued jobs)."""
    return run_due()
