"""The app gunicorn serves for bench_ingest.py: tests/hostapp on the bench database.

Evaluation is queued (ENGAGE_REDIS_URL, Redis database 14; no worker runs), so a
request costs what the HTTP API itself costs: validation, the writes, the enqueue.
"""

from __future__ import annotations

from common import POSTGRES_URL, REDIS_URL
from flask import Flask

from tests.hostapp import create_app as create_host_app

INGEST_URL = POSTGRES_URL.rsplit("/", 1)[0] + "/engage_bench_ingest"
#: One of the keys tests/hostapp configures (ENGAGE_API_KEYS).
API_KEY = "test-key"


def create_app() -> Flask:
    """The host app (engage blueprint, API keys) with the Redis queue, not in testing mode."""
    app = create_host_app(INGEST_URL, ENGAGE_REDIS_URL=REDIS_URL)
    app.config["TESTING"] = False
    return app
