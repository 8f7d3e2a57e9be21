"""Email broadcast throughput against a local SMTP sink (aiosmtpd, in its own process).

N customers (bulk-inserted with Core) in one segment receive one email broadcast:
``engage.send_broadcast`` in inline mode (snapshot, then ``deliver_batch`` batch after
batch: one SMTP connection per batch of ENGAGE_BATCH_SIZE, one status commit per
message) against a naive loop rendering the same message and sending it with
Flask-Mail's ``mail.send(msg)`` (one SMTP connection per message, no status
written). Then the peak Python memory (tracemalloc, which slows everything ~4x) of
our delivery at 1 batch vs several batches.
Usage: python benchmarks/bench_email.py [--sizes 2000 10000] [--naive 2000] [--memory 500 2000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import time
import tracemalloc
from datetime import UTC, datetime
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from common import POSTGRES_URL, ensure_database, reset_schema, table
from flask import Flask
from sqlalchemy import insert, select

from flask_engage.channels import email
from flask_engage.messages.templates import render
from flask_engage.messages.unsubscribe import make_token
from flask_engage.messages.urls import external_url
from flask_engage.models import Customer
from tests.hostapp import create_app, db, engage

EMAIL_URL = POSTGRES_URL.rsplit("/", 1)[0] + "/engage_bench_email"
SUBJECT = "News for {{ customer.plan }} customers"
BODY = "<p>Hello {{ customer.email }},</p><p>Our {{ customer.city }} offer is here.</p>"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sink(port: int, messages: Synchronized, connections: Synchronized) -> None:
    """The SMTP sink process: accepts everything, counts messages and EHLOs."""
    from aiosmtpd.controller import Controller

    class Counter:
        async def handle_EHLO(
            self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
        ) -> list[str]:
            with connections.get_lock():
                connections.value += 1
            session.host_name = hostname
            return responses

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            with messages.get_lock():
                messages.value += 1
            return "250 OK"

    controller = Controller(Counter(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


def build(port: int) -> Flask:
    app = create_app(
        EMAIL_URL,
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=port,
        MAIL_SUPPRESS_SEND=False,
    )
    app.config["TESTING"] = False
    return app


def load(size: int) -> Any:
    """Fresh schema, ``size`` customers (all plan "pro"), one segment of all of them."""
    now = datetime.now(UTC)
    reset_schema(db.engine)
    db.create_all()
    engage.create_all()
    cities = ("Lagos", "Accra", "Nairobi", "Cairo")
    with db.engine.begin() as conn:
        for first in range(0, size, 10_000):
            conn.execute(
                insert(Customer.__table__),
                [
                    {
                        "external_id": str(n),
                        "email": f"c{n}@example.com",
                        "attributes": {"plan": "pro", "city": cities[n % 4]},
                        "created_at": now,
                        "updated_at": now,
                    }
                    for n in range(first, min(size, first + 10_000))
                ],
            )
    segment = engage.create_segment("Pro", {"attribute": "plan", "op": "eq", "value": "pro"})
    assert engage.count(segment.filters) == size
    return segment


def ours(segment: Any, name: str, memory: bool) -> tuple[float, float | None]:
    """Seconds for create + send_broadcast (inline), and peak MiB when ``memory``."""
    if memory:
        tracemalloc.start()
    started = time.perf_counter()
    broadcast = engage.create_broadcast(
        name, channel="email", segments=[segment], subject=SUBJECT, body=BODY
    )
    engage.send_broadcast(broadcast)
    took = time.perf_counter() - started
    peak = None
    if memory:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    counts = engage.broadcast_counts(broadcast)
    assert broadcast.status == "sent" and counts["failed"] == 0, (broadcast.status, counts)
    return took, peak


def naive(app: Flask, size: int) -> float:
    """The same messages, one ``mail.send`` (one SMTP connection) each."""
    mail = app.extensions["mail"]
    started = time.perf_counter()
    with db.engine.connect() as conn:
        rows = conn.execute(select(Customer.__table__).order_by(Customer.id).limit(size)).all()
    for row in rows:
        customer = Customer(
            id=row.id, external_id=row.external_id, email=row.email, attributes=row.attributes
        )
        url = external_url("engage.unsubscribe", token=make_token(customer.id, "email"))
        rendered = render(
            SUBJECT, BODY, {"customer": customer.template_context(), "unsubscribe_url": url}
        )
        mail.send(email.build(customer, rendered, url))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_000, 10_000])
    parser.add_argument(
        "--naive", type=int, default=2_000, help="largest size the naive loop runs at (0: none)"
    )
    parser.add_argument("--memory", type=int, nargs="+", default=[500, 2_000])
    args = parser.parse_args()
    ensure_database(EMAIL_URL)
    port = free_port()
    messages = multiprocessing.Value("l", 0)
    connections = multiprocessing.Value("l", 0)
    process = multiprocessing.Process(target=sink, args=(port, messages, connections), daemon=True)
    process.start()
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    app = build(port)
    speed_rows, memory_rows = [], []
    try:
        with app.app_context():
            batch = app.config["ENGAGE_BATCH_SIZE"]
            for size in args.sizes:
                segment = load(size)
                runs: list[tuple[str, float]] = []
                before_m, before_c = messages.value, connections.value
                took, _ = ours(segment, f"speed {size}", memory=False)
                sent, conns = messages.value - before_m, connections.value - before_c
                assert sent == size, (sent, size)
                runs.append((f"engage.send_broadcast (batches of {batch})", took))
                speed_rows.append([size, runs[0][0], conns, took, size / took, 1.0])
                if args.naive and size <= args.naive:
                    before_m, before_c = messages.value, connections.value
                    naive_s = naive(app, size)
                    sent, conns = messages.value - before_m, connections.value - before_c
                    assert sent == size, (sent, size)
                    speed_rows.append(
                        [
                            size,
                            "naive mail.send per message",
                            conns,
                            naive_s,
                            size / naive_s,
                            (size / naive_s) / (size / took),
                        ]
                    )
                print(f"{size:,}: speed done", flush=True)
                db.session.remove()
            for size in args.memory:
                segment = load(size)
                took, peak = ours(segment, f"memory {size}", memory=True)
                memory_rows.append([size, -(-size // batch), peak, took, size / took])
                print(f"{size:,}: memory done", flush=True)
                db.session.remove()
            db.engine.dispose()
    finally:
        process.terminate()
        process.join()
    print("\n1 worker (this process), inline mode, PostgreSQL, sink in another process\n")
    print(
        table(
            ["recipients", "sender", "SMTP connections", "seconds", "messages/s", "speed vs ours"],
            speed_rows,
        )
    )
    print("\nOur delivery under tracemalloc (slower: every allocation is traced)\n")
    print(
        table(
            ["recipients", "batches", "peak Python MiB", "seconds (traced)", "messages/s (traced)"],
            memory_rows,
        )
    )


if __name__ == "__main__":
    main()
