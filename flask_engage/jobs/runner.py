"""Running triggered work to the end in this process: automation steps and sends."""

from __future__ import annotations

from datetime import datetime

from flask import current_app
from sqlalchemy import func, select

from ..automations import advance_runs
from ..db import operation_session, shares_host_transaction
from ..messages.delivery import DeliveryRun, deliver_batch
from ..models import Message, MessageStatus, OutboxTask, utcnow
from ..outbox import add_to_outbox
from .dispatch import enqueue
from .outbox import drain_outbox

#: Most batch jobs enqueued at once for one broadcast (the schedule enqueues the rest).
MAX_BATCH_JOBS = 1000


def advance_automations(now: datetime | None = None) -> int:
    """Advance due automation runs until none is due; returns runs advanced."""
    now = now or utcnow()
    total = 0
    while True:
        with operation_session() as session:
            advanced, _ = advance_runs(session, now)
        total += advanced
        if advanced == 0:
            return total


def deliver_all(broadcast_id: int | None = None, now: datetime | None = None) -> int:
    """Deliver queued messages, batch after batch, in this process."""
    if shares_host_transaction():
        # Sending now would commit the host's pending work on its shared connection:
        # leave a note in the outbox, done once the host's transaction commits.
        with operation_session() as session:
            add_to_outbox(session, OutboxTask.DELIVER, [0])
        return 0
    total = 0
    with DeliveryRun() as run:  # the same connections for every batch
        while True:
            sent = deliver_batch(
                broadcast_id=broadcast_id,
                limit=current_app.config["ENGAGE_BATCH_SIZE"],
                now=now,
                run=run,
            )
            total += sent
            if sent == 0:
                return total


def enqueue_deliveries(job: object) -> None:
    """Enqueue enough batch jobs (``job``) for the queued messages."""
    with operation_session() as session:
        queued = (
            session.scalar(select(func.count()).where(Message.status == MessageStatus.QUEUED)) or 0
        )
    size = current_app.config["ENGAGE_BATCH_SIZE"]
    for _ in range(min(-(-queued // size), MAX_BATCH_JOBS)):
        if not enqueue(job):  # type: ignore[arg-type]
            return


def finish_here(now: datetime | None = None, *, triggered: bool = False) -> None:
    """Do the outbox work, then the automation steps and sends it caused (or that the
    caller's own work caused: ``triggered``), all in this process."""
    _, drained = drain_outbox(now)
    if triggered or drained:
        advance_automations(now)
        deliver_all(now=now)
