"""Automations: steps walked by customers who join or leave a segment.

* :mod:`.steps` – the step kinds (wait, if, send, exit) in one registry.
* :mod:`.runs` – runs started with membership changes, walked step by step.
* :mod:`.service` – create, update, pause, delete, stats.
"""

from __future__ import annotations

from .runs import advance_runs, retry_parked_runs, start_runs
from .service import (
    automation_stats,
    check_trigger,
    create_automation,
    delete_automation,
    update_automation,
)
from .steps import Step, check_steps, describe_step, register, step_keys

__all__ = [
    "Step",
    "advance_runs",
    "automation_stats",
    "check_steps",
    "check_trigger",
    "create_automation",
    "delete_automation",
    "describe_step",
    "register",
    "retry_parked_runs",
    "start_runs",
    "step_keys",
    "update_automation",
]
