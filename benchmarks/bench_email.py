"""Email broadcast throughput against a local SMTP sink (aiosmtpd, in processes of its own).

N customers (bulk-inserted with Core) in one segment receive one email broadcast:
``engage.send_broadcast`` in inline mode (snapshot, then ``deliver_batch`` batch after
batch over connections kept for the run, statuses written in groups), with
``ENGAGE_SMTP_CONNECTIONS`` 1 and the default, against a raw ``smtplib`` loop over one
connection sending one prebuilt message to each address (no database, no templates,
no MIME building) and, optionally, a naive loop rendering each message and calling
Flask-Mail's ``mail.send(msg)`` (one SMTP connection per message, no status written).
Each sender runs ``--repeat`` times, interleaved; the best run counts. The sink runs
as ``--sinks`` aiosmtpd processes on one port (SO_REUSEPORT: the kernel spreads the
connections). Then the peak Python memory (tracemalloc, which slows everything ~4x)
of our delivery at 1 batch vs several batches.
``--pipelining``: the sink offers PIPELINING (RFC 2920), as Postfix does; Engage then
sends MAIL FROM, RCPT TO and DATA at once (smtplib's raw loop cannot).
Usage: python benchmarks/bench_email.py [--sizes 2000 10000] [--sinks 1 4] [--repeat 2]
       [--naive 0] [--memory 500 2000] [--pipelining]
"""

from __future__ import annotations

import argparse
import multiprocessing
import smtplib
import socket
import time
import tracemalloc
from datetime import UTC, datetime
from functools import partial
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from common import POSTGRES_URL, ensure_database, reset_schema, table
from flask import Flask, current_app
from sqlalchemy import insert, select

from flask_engage.channels import email
from flask_engage.config import DEFAULTS
from flask_engage.messages.templates import render
from flask_engage.messages.unsubscribe import make_token
from flask_engage.messages.urls import external_url
from flask_engage.models import Customer
from tests.hostapp import create_app, db, engage
from tests.smtp_sink import free_port

EMAIL_URL = POSTGRES_URL.rsplit("/", 1)[0] + "/engage_bench_email"
SUBJECT = "News for {{ customer.plan }} customers"
BODY = "<p>Hello {{ customer.email }},</p><p>Our {{ customer.city }} offer is here.</p>"


def sink(
    port: int, messages: Synchronized, connections: Synchronized, pipelining: bool = False
) -> None:
    """One SMTP sink process: accepts everything, counts messages and EHLOs; offers
    PIPELINING (RFC 2920, as Postfix does) when ``pipelining``."""
    import asyncio

    from aiosmtpd.smtp import SMTP

    class Counter:
        async def handle_EHLO(
            self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
        ) -> list[str]:
            with connections.get_lock():
                connections.value += 1
            session.host_name = hostname
            if pipelining:
                return [*responses[:-1], "250-PIPELINING", responses[-1]]
            return responses

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            with messages.get_lock():
                messages.value += 1
            return "250 OK"

    async def serve() -> None:
        handler = Counter()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="sink"), "127.0.0.1", port, reuse_port=True
        )
        await server.serve_forever()

    asyncio.run(serve())


def start_sinks(
    count: int,
    port: int,
    messages: Synchronized,
    connections: Synchronized,
    pipelining: bool = False,
) -> list:
    processes = [
        multiprocessing.Process(
            target=sink, args=(port, messages, connections, pipelining), daemon=True
        )
        for _ in range(count)
    ]
    for process in processes:
        process.start()
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    time.sleep(0.5)  # let every process bind before the first run
    return processes


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


def ours(
    segment: Any, name: str, memory: bool, connections: int | None = None
) -> tuple[float, float | None]:
    """Seconds for create + send_broadcast (inline), and peak MiB when ``memory``."""
    if connections is not None:
        current_app.config["ENGAGE_SMTP_CONNECTIONS"] = connections
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


def raw(port: int, size: int) -> float:
    """One prebuilt message sent to ``size`` addresses with ``smtplib`` over one connection."""
    customer = Customer(id=0, external_id="0", email="c0@example.com", attributes={})
    url = external_url("engage.unsubscribe", token=make_token(customer.external_id, "email"))
    rendered = render(
        SUBJECT, BODY, {"customer": {"plan": "pro", "city": "Lagos"}, "unsubscribe_url": url}
    )
    data = email.build(customer, rendered, url).as_bytes()
    sender = email.sender()
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as connection:
        for n in range(size):
            connection.sendmail(sender, [f"c{n}@example.com"], data)
    return time.perf_counter() - started


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


def broadcast(segment: Any, connections: int) -> float:
    """Seconds for one more broadcast to ``segment`` over ``connections`` connections."""
    broadcast.runs += 1  # type: ignore[attr-defined]
    name = f"speed {broadcast.runs} ({connections})"  # type: ignore[attr-defined]
    return ours(segment, name, False, connections)[0]


broadcast.runs = 0  # type: ignore[attr-defined]


def counted(
    run: Any, size: int, messages: Synchronized, connections: Synchronized
) -> tuple[float, int]:
    """Seconds ``run()`` takes, and SMTP connections it opened (asserting every message)."""
    before_m, before_c = messages.value, connections.value
    took = run()
    sent = messages.value - before_m
    assert sent == size, (sent, size)
    return took, connections.value - before_c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_000, 10_000])
    parser.add_argument("--sinks", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--naive", type=int, default=0, help="largest size the naive loop runs at (0: none)"
    )
    parser.add_argument("--memory", type=int, nargs="*", default=[500, 2_000])
    parser.add_argument(
        "--pipelining",
        action="store_true",
        help="the sink offers PIPELINING (as Postfix does); smtplib's raw loop cannot use it",
    )
    args = parser.parse_args()
    ensure_database(EMAIL_URL)
    speed_rows: list[list[Any]] = []
    memory_rows: list[list[Any]] = []
    messages = multiprocessing.Value("l", 0)
    connections = multiprocessing.Value("l", 0)
    default = DEFAULTS["ENGAGE_SMTP_CONNECTIONS"]
    for sinks in args.sinks:
        port = free_port()
        processes = start_sinks(sinks, port, messages, connections, args.pipelining)
        app = build(port)
        try:
            with app.app_context():
                batch = app.config["ENGAGE_BATCH_SIZE"]
                for size in args.sizes:
                    segment = load(size)
                    senders: dict[str, Any] = {
                        "raw smtplib loop, one connection (no DB, no templates)": partial(
                            raw, port, size
                        ),
                    }
                    for count in sorted({1, default}):
                        name = f"engage.send_broadcast, ENGAGE_SMTP_CONNECTIONS={count}"
                        senders[name] = partial(broadcast, segment, count)
                    if args.naive and size <= args.naive:
                        senders["naive mail.send per message"] = partial(naive, app, size)
                    best: dict[str, tuple[float, int]] = {}
                    for _ in range(args.repeat):
                        for name, run in senders.items():
                            took, opened = counted(run, size, messages, connections)
                            if name not in best or took < best[name][0]:
                                best[name] = (took, opened)
                    base = size / best[next(iter(senders))][0]
                    for name, (took, opened) in best.items():
                        speed_rows.append(
                            [size, sinks, name, opened, took, size / took, size / took / base]
                        )
                    print(f"{size:,} with {sinks} sink process(es): speed done", flush=True)
                    db.session.remove()
                if sinks == args.sinks[-1]:
                    for size in args.memory:
                        segment = load(size)
                        took, peak = ours(segment, f"memory {size}", memory=True)
                        memory_rows.append([size, -(-size // batch), peak, took, size / took])
                        print(f"{size:,}: memory done", flush=True)
                        db.session.remove()
                db.engine.dispose()
        finally:
            for process in processes:
                process.terminate()
                process.join()
    offers = "offering PIPELINING" if args.pipelining else "without PIPELINING"
    print(
        f"\n1 worker (this process), inline mode, PostgreSQL, best of {args.repeat} "
        f"interleaved runs, sink processes sharing one port, {offers}\n"
    )
    print(
        table(
            [
                "recipients",
                "sink processes",
                "sender",
                "SMTP connections",
                "seconds",
                "messages/s",
                "vs raw smtplib",
            ],
            speed_rows,
        )
    )
    if memory_rows:
        print("\nOur delivery under tracemalloc (slower: every allocation is traced)\n")
        print(
            table(
                [
                    "recipients",
                    "batches",
                    "peak Python MiB",
                    "seconds (traced)",
                    "messages/s (traced)",
                ],
                memory_rows,
            )
        )


if __name__ == "__main__":
    main()
