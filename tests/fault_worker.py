"""A worker process for the fault-injection tests in test_faults.py, killed on purpose.

Usage:
  python tests/fault_worker.py recompute DATABASE_URL SEGMENT MARKER
      recompute one segment; MARKER is created when the first membership row is
      being written, i.e. in the middle of the recompute's transaction.
  python tests/fault_worker.py run_due DATABASE_URL NOW SMTP_PORT LEASE
      ``run_due(NOW)`` with real SMTP delivery over one connection, in batches of 10,
      with a send lease of LEASE seconds.
  python tests/fault_worker.py worker DATABASE_URL REDIS_URL QUEUE INTERVAL
      ``flask engage worker`` (not burst): RQ on QUEUE and a schedule tick every
      INTERVAL seconds, until killed.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
from datetime import datetime
from pathlib import Path

from sqlalchemy import event

from tests.hostapp import create_app, db, engage


def recompute(url: str, segment: str, marker: Path) -> None:
    app = create_app(url)
    with app.app_context():
        def mark(conn, cursor, statement, parameters, context, executemany) -> None:
            if statement.lstrip().upper().startswith("INSERT INTO ENGAGE_MEMBERSHIPS"):
                marker.touch()

        event.listen(db.engine, "before_cursor_execute", mark)
        engage.recompute(segment)


def run_due(url: str, now: str, port: int, lease: int) -> None:
    # one SMTP connection: one message in flight (test_smtp kills workers with several)
    app = create_app(url, MAIL_SERVER="127.0.0.1", MAIL_PORT=port, MAIL_SUPPRESS_SEND=False,
                     ENGAGE_BATCH_SIZE=10, ENGAGE_SEND_LEASE=lease, ENGAGE_SMTP_CONNECTIONS=1)
    app.testing = False  # a production worker
    with app.app_context():
        engage.run_due(datetime.fromisoformat(now))


def worker(url: str, redis_url: str, queue: str, interval: int) -> None:
    app = create_app(
        url,
        ENGAGE_REDIS_URL=redis_url,
        ENGAGE_QUEUE=queue,
        ENGAGE_SCHEDULE_INTERVAL=interval,
        ENGAGE_RECOMPUTE_INTERVAL=interval,
    )
    app.testing = False  # a production worker
    with app.app_context():
        engage.work()


if __name__ == "__main__":
    faulthandler.register(signal.SIGUSR1)  # a stuck worker's stacks, for the test's report
    command, *args = sys.argv[1:]
    if command == "recompute":
        recompute(args[0], args[1], Path(args[2]))
    elif command == "worker":
        worker(args[0], args[1], args[2], int(args[3]))
    else:
        run_due(args[0], args[1], int(args[2]), int(args[3]))
