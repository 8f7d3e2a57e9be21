"""Automations: steps walked by customers who join or leave a segment, or who record
an event.

* :mod:`.steps` – the step kinds (wait, if, send, exit) in one registry, and the
  flat program steps compile to.
* :mod:`.branches` – branching steps (wait for an event, if/else).
* :mod:`.events` – the events triggers and ``wait_for`` steps match.
* :mod:`.runs` – runs started with membership changes and events, walked step by step.
* :mod:`.service` – create, update, pause, delete, stats.
"""

from __future__ import annotations

from . import branches  # noqa: F401  (registers the branching steps)
from .runs import advance_runs, retry_parked_runs, start_event_runs, start_runs, wake_runs
from .service import (
    automation_stats,
    check_trigger,
    create_automation,
    delete_automation,
    update_automation,
)
from .steps import Step, check_steps, compile_steps, describe_step, register, step_keys

__all__ = [
    "Step",
    "advance_runs",
    "automation_stats",
    "check_steps",
    "check_trigger",
    "compile_steps",
    "create_automation",
    "delete_automation",
    "describe_step",
    "register",
    "retry_parked_runs",
    "start_event_runs",
    "start_runs",
    "step_keys",
    "update_automation",
    "wake_runs",
]
