"""A delivery worker for the crash test in test_smtp.py (run as a subprocess).

Usage: python tests/smtp_worker.py DATABASE_URL SMTP_PORT SMTP_CONNECTIONS
Delivers batches until no message is queued, then exits.
"""

from __future__ import annotations

import sys
import time

from sqlalchemy import func, select

from flask_engage.messages.delivery import deliver_batch
from flask_engage.models import Message
from tests.hostapp import create_app, db

BATCH = 10


def main(url: str, port: int, connections: int) -> None:
    app = create_app(url, MAIL_SERVER="127.0.0.1", MAIL_PORT=port, MAIL_SUPPRESS_SEND=False,
                     ENGAGE_BATCH_SIZE=BATCH, ENGAGE_SEND_LEASE=1,
                     ENGAGE_SMTP_CONNECTIONS=connections)
    with app.app_context():
        while True:
            if deliver_batch(limit=BATCH):
                continue
            queued = db.session.scalar(select(func.count()).where(Message.status == "queued"))
            db.session.rollback()
            if not queued:
                return
            time.sleep(0.1)  # claimed by a dead worker: wait for its lease to run out


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
