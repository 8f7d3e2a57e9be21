"""``flask engage worker``: an RQ worker on Engage's queue, plus the schedule."""

from __future__ import annotations

from flask import current_app
from rq import SimpleWorker

from ..db import log
from .dispatch import enqueue, get_queue, request_drain
from .rqjobs import job_drain_outbox, job_run_due
from .schedule import Ticker, run_due


def work(
    burst: bool = False,
    *,
    queues: tuple[str, ...] = (),
    name: str | None = None,
    log_level: str = "INFO",
    max_jobs: int | None = None,
) -> bool:
    """Run an RQ SimpleWorker (no fork) on Engage's queue, in this process and app context.

    Next to it a ticker thread runs the schedule (:func:`~.schedule.tick`), so
    waits, scheduled broadcasts and time-based segments go on even while Redis is
    down; outbox rows left during an outage are drained at the first tick after.
    With ``burst`` it processes the queued jobs and ``run_due``, then returns.
    Inline mode (no ``ENGAGE_REDIS_URL``) just runs ``run_due``.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    queue = get_queue()
    if queue is None:
        run_due()
        return True
    if burst and not enqueue(job_run_due):
        run_due()
        return False
    names = [queue.name, *(q for q in queues if q != queue.name)]
    worker = SimpleWorker(names, connection=queue.connection, name=name)
    if burst:
        return bool(worker.work(burst=True, with_scheduler=True, logging_level="WARNING"))
    request_drain(job_drain_outbox)
    ticker = Ticker(app)
    ticker.start()
    log.info(
        "flask-engage: worker %s on %s, schedule every %ss",
        worker.name,
        ", ".join(names),
        app.config["ENGAGE_SCHEDULE_INTERVAL"],
    )
    try:
        return bool(
            worker.work(
                burst=False,
                with_scheduler=True,
                logging_level=log_level.upper(),
                max_jobs=max_jobs,
            )
        )
    finally:
        ticker.stop()
