"""``flask engage worker``: an RQ worker on Engage's queue, plus the schedule."""

from __future__ import annotations

import time

from redis.exceptions import RedisError
from rq import Queue, SimpleWorker

from ..db import log, this_app
from .dispatch import enqueue, get_queue, request_drain, wait_for_notifications
from .rqjobs import job_drain_outbox, job_run_due
from .schedule import Ticker, run_due

#: Longest pause before RQ's loop is started again after Redis went away.
RESTART_MAX_WAIT = 30


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
    Inline mode (no ``ENGAGE_REDIS_URL``) just runs ``run_due``. Drain requests of
    this process's own commits reach Redis first.
    """
    app = this_app()
    queue = get_queue()
    if queue is None:
        run_due()
        return True
    wait_for_notifications()
    if burst and not enqueue(job_run_due):
        run_due()
        return False
    names = [queue.name, *(q for q in queues if q != queue.name)]
    if burst:
        worker = SimpleWorker(names, connection=queue.connection, name=name)
        return bool(worker.work(burst=True, with_scheduler=True, logging_level="WARNING"))
    request_drain(job_drain_outbox)
    ticker = Ticker(app)
    ticker.start()
    log.info(
        "flask-engage: worker on %s, schedule every %ss",
        ", ".join(names),
        app.config["ENGAGE_SCHEDULE_INTERVAL"],
    )
    try:
        return _work_until_stopped(names, queue, name, log_level, max_jobs)
    finally:
        ticker.stop()


def _work_until_stopped(
    names: list[str], queue: Queue, name: str | None, log_level: str, max_jobs: int | None
) -> bool:
    """Run RQ's loop; start it again when it gave up on a Redis connection error.

    RQ's loop quits on a connection error outside its dequeue (a heartbeat, its
    maintenance); the ticker keeps the schedule going meanwhile, and the loop comes
    back once Redis answers. A stop request (SIGTERM, Ctrl-C) or ``max_jobs`` ends it.
    """
    worked, restarts = False, 0
    while True:
        worker = SimpleWorker(
            names,
            connection=queue.connection,
            name=f"{name}-{restarts}" if name and restarts else name,
        )
        try:
            worked |= bool(
                worker.work(
                    burst=False,
                    with_scheduler=True,
                    logging_level=log_level.upper(),
                    max_jobs=max_jobs,
                )
            )
        except (RedisError, OSError) as exc:  # RQ's teardown could not reach Redis either
            log.warning("flask-engage: the RQ worker lost Redis (%s)", exc)
        if stop_requested(worker) or max_jobs is not None:
            return worked
        restarts += 1
        log.warning("flask-engage: the RQ worker stopped (Redis unreachable?); restarting it")
        time.sleep(min(2**restarts, RESTART_MAX_WAIT))


def stop_requested(worker: SimpleWorker) -> bool:
    """Whether RQ's loop ended because someone asked it to (SIGTERM, SIGINT).

    RQ 3.0 notes the request's time (idle or busy); ``test_faults`` proves a
    SIGTERM still ends ``flask engage worker``, should RQ rename it.
    """
    return worker._shutdown_requested_date is not None or bool(worker._stop_requested)
