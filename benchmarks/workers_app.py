"""The app the workers of bench_workers.py run: tests/hostapp on its own database.

Jobs go to Redis (``BENCH_REDIS_URL``) on the queue ``engage-bench-workers``; email
goes to the SMTP sink on ``BENCH_SMTP_PORT``. Not in testing mode, so Flask-Mail
really sends.
"""

from __future__ import annotations

import os

from common import POSTGRES_URL, REDIS_URL
from flask import Flask

from tests.hostapp import create_app as create_host_app

WORKERS_URL = POSTGRES_URL.rsplit("/", 1)[0] + "/engage_bench_workers"
QUEUE = "engage-bench-workers"


def create_app() -> Flask:
    """The host app with the Redis queue and the sink as its mail server."""
    app = create_host_app(
        WORKERS_URL,
        ENGAGE_REDIS_URL=REDIS_URL,
        ENGAGE_QUEUE=QUEUE,
        # the schedule stays out of the way of what is measured
        ENGAGE_SCHEDULE_INTERVAL=3600,
        ENGAGE_RECOMPUTE_INTERVAL=3600,
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=int(os.environ.get("BENCH_SMTP_PORT", "8025")),
        MAIL_SUPPRESS_SEND=False,
    )
    app.config["TESTING"] = False
    return app
