"""Time per hit of the tracking endpoints: the open pixel and a click redirect.

An email broadcast goes to N customers (tests/hostapp, 5 segments, one of them
"clicked this broadcast"); then the test client fetches their pixels and follows
their links, as mail clients would, in alternating blocks next to two bare Flask
views: one answering the same GIF, one inserting a row of an untracked model and
committing (the floor of any write to this database). Each hit verifies its
token, writes the event (customer lookup, event row, outbox rows, the message's
first open or click) and commits before answering.

"answer" is the time until the response is there (what the visitor waits for);
"with follow-up" adds what the hit set off, run once the response is closed: in
inline mode the customer's segments are re-evaluated then, with Redis
(``BENCH_REDIS_URL``) that work is only queued. Target: < 5 ms per hit on SQLite.
Usage: python benchmarks/bench_engagement.py [-n 2000] [--customers 200]
       [--sqlite-only] [--dir /dev/shm]
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from html import unescape
from typing import Any
from urllib.parse import urlsplit

from common import POSTGRES_URL, REDIS_URL, ensure_database, percentile, reset_schema, table
from flask import Flask, Response

from flask_engage.blueprints.engagement import PIXEL
from tests.hostapp import Note, create_app, db, engage

ENGAGEMENT_URL = POSTGRES_URL.rsplit("/", 1)[0] + "/engage_bench_engagement"
BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"}
SEGMENTS = {
    "Pro": {"attribute": "plan", "op": "eq", "value": "pro"},
    "In Lagos": {"attribute": "city", "op": "eq", "value": "Lagos"},
    "New": {"event": "Signed up", "window": {"last_days": 7}},
    "Opened anything lately": {"event": "Email opened", "window": {"last_days": 30}},
}


def build(url: str, redis: bool, customers: int) -> tuple[Flask, list[str], list[str]]:
    """The app, and the pixel and click paths of one email per customer."""
    config: dict[str, Any] = {"ENGAGE_REDIS_URL": REDIS_URL} if redis else {}
    app = create_app(url, **config)

    @app.get("/bare/<token>")
    def bare(token: str) -> Response:
        return Response(PIXEL, mimetype="image/gif")

    @app.get("/commit/<token>")
    def commit(token: str) -> Response:
        db.session.add(Note(text=token))
        db.session.commit()
        return Response(PIXEL, mimetype="image/gif")

    with app.app_context():
        reset_schema(db.engine)
        db.create_all()
        engage.create_all()
        for n in range(customers):
            engage.identify(
                n, email=f"c{n}@example.com", plan="pro" if n % 2 else "free", city="Lagos"
            )
        db.session.commit()
        for name, filters in SEGMENTS.items():
            engage.create_segment(name, filters)
        broadcast = engage.create_broadcast(
            "Sale",
            channel="email",
            segments=["all"],
            subject="Sale",
            body='<p>Hi</p><p><a href="https://shop.example/sale?from=email">Sale</a></p>',
        )
        engage.create_segment(
            "Clicked the sale",
            {
                "event": "Email clicked",
                "where": [{"property": "broadcast_id", "op": "eq", "value": broadcast.id}],
            },
        )
        with app.extensions["mail"].record_messages() as sent:
            engage.send_broadcast(broadcast)
            if redis:  # the sends were queued: deliver them here
                engage.run_due()
        db.session.remove()
    pixels, clicks = [], []
    for mail in sent:
        pixels += [_path(u) for u in re.findall(r'<img src="([^"]*)"', mail.html)]
        clicks += [_path(u) for u in re.findall(r'href="([^"]*/engage/click/[^"]*)"', mail.html)]
    return app, pixels, clicks


def _path(url: str) -> str:
    return urlsplit(unescape(url)).path


def measure(app: Flask, pixels: list[str], clicks: list[str], hits: int, block: int = 50):
    """Seconds per hit (answer, and answer with follow-up): bare views, pixel, click,
    in alternating blocks."""
    client = app.test_client()
    kinds = ("bare", "commit", "open", "click")
    answer: dict[str, list[float]] = {kind: [] for kind in kinds}
    total: dict[str, list[float]] = {kind: [] for kind in kinds}
    expected = {"bare": 200, "commit": 200, "open": 200, "click": 302}
    for n in range(20):  # warm up every path
        client.get(f"/bare/{n}", headers=BROWSER).close()
        client.get(f"/commit/w{n}", headers=BROWSER).close()
        client.get(pixels[n % len(pixels)], headers=BROWSER).close()
        client.get(clicks[n % len(clicks)], headers=BROWSER).close()
    for start in range(0, hits, block):
        for kind in kinds:
            for n in range(start, start + block):
                url = {
                    "bare": f"/bare/{n}",
                    "commit": f"/commit/{n}",
                    "open": pixels[n % len(pixels)],
                    "click": clicks[n % len(clicks)],
                }[kind]
                begun = time.perf_counter()
                response = client.get(url, headers=BROWSER)
                answered = time.perf_counter()
                response.close()
                done = time.perf_counter()
                answer[kind].append(answered - begun)
                total[kind].append(done - begun)
                assert response.status_code == expected[kind], (url, response.data[:200])
    return answer, total


def flush_redis() -> None:
    from redis import Redis

    Redis.from_url(REDIS_URL).flushdb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--hits", type=int, default=2000)
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--dir", default=None, help="where the SQLite file goes (e.g. /dev/shm)")
    args = parser.parse_args()
    rows = []
    databases = [("SQLite", "sqlite:///{tmp}/bench-{mode}.db")]
    if not args.sqlite_only:
        ensure_database(ENGAGEMENT_URL)
        databases.append(("PostgreSQL", ENGAGEMENT_URL))
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for label, url in databases:
            for mode, redis in (("inline", False), ("Redis queue", True)):
                if redis:
                    flush_redis()
                app, pixels, clicks = build(
                    url.format(tmp=tmp, mode=mode[:6]), redis, args.customers
                )
                answer, total = measure(app, pixels, clicks, args.hits)
                with app.app_context():
                    clickers = engage.members("clicked-the-sale").count()
                    db.session.remove()
                    db.engine.dispose()
                if redis:
                    flush_redis()
                ms = {kind: [t * 1000 for t in values] for kind, values in answer.items()}
                for kind in ("open", "click"):
                    mean = statistics.mean(ms[kind])
                    rows.append(
                        [
                            label,
                            mode,
                            kind,
                            args.hits,
                            statistics.mean(ms["bare"]),
                            statistics.mean(ms["commit"]),
                            mean,
                            statistics.median(ms[kind]),
                            percentile(ms[kind], 95),
                            statistics.mean(total[kind]) * 1000,
                            "yes" if mean < 5 else "NO",
                        ]
                    )
                    print(f"{label} {mode} {kind}: answer {mean:.2f} ms/hit", flush=True)
                if not redis:  # evaluation ran in the requests: the clickers are members
                    assert clickers == args.customers, clickers
    print()
    print(
        table(
            [
                "database",
                "evaluation",
                "hit",
                "hits",
                "bare GIF view (ms)",
                "bare insert + commit (ms)",
                "answer mean (ms)",
                "answer p50 (ms)",
                "answer p95 (ms)",
                "with follow-up mean (ms)",
                "answer < 5 ms",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
