"""Background work: the outbox, RQ jobs, the schedule and the worker.

* :mod:`.dispatch` – Redis, the circuit breaker, enqueueing.
* :mod:`.tasks` – what each outbox task does (a registry).
* :mod:`.outbox` – claiming and draining the outbox, failures kept local.
* :mod:`.runner` – automation steps and sends run to the end in this process.
* :mod:`.schedule` – ``run_due``, ticks, the inline schedule.
* :mod:`.rqjobs` – the functions RQ runs.
* :mod:`.worker` – ``flask engage worker``.
"""

from __future__ import annotations

from .dispatch import JOB_RETRY_INTERVALS, enqueue, get_queue, is_inline, redis_connection
from .outbox import drain_outbox, retry_parked
from .rqjobs import job_deliver_batch, job_drain_outbox, job_recompute, job_run_due
from .runner import advance_automations, deliver_all, finish_here
from .schedule import get_state_value, last_tick, recompute_one, run_due, tick
from .worker import work

__all__ = [
    "JOB_RETRY_INTERVALS",
    "advance_automations",
    "deliver_all",
    "drain_outbox",
    "enqueue",
    "finish_here",
    "get_queue",
    "get_state_value",
    "is_inline",
    "job_deliver_batch",
    "job_drain_outbox",
    "job_recompute",
    "job_run_due",
    "last_tick",
    "recompute_one",
    "redis_connection",
    "retry_parked",
    "run_due",
    "tick",
    "work",
]
