"""Benchmark: ``publish_event`` with 1 and with 16 concurrent publishers.

Each publisher is a process of its own (as application servers are) that
calls ``clarion.publish_event("bid_placed", auction_id=<its auction>)`` in a
loop for ``--seconds``; every publisher has an auction of its own. Measured:
events per second over all publishers, and each call's duration (validation,
INSERT, COMMIT, Redis PUBLISH) p50 / p99.

Two ways of publishing the same events, in the same run:

* ``default topic``: ``broadcast_channels`` left to its default (the
  category ``bid``): the ordering lock is the auction's alone;
* ``shared topic``: ``broadcast_channels=["bid"]`` given explicitly, which
  orders every event of the topic: the auctions' publishers take turns on one
  lock, as every auction event did before the default topic left the lock.

    CLARION_BENCH_REDIS_URL=redis://127.0.0.1:6379/14 \\
    .venv/bin/python bench/publish_events.py --publishers 1,16 --seconds 5 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clarion import migrate  # noqa: E402
from clarion.core.db import make_engine  # noqa: E402
from clarion.core.settings import Settings, reset_settings  # noqa: E402

ADMIN_URL = os.environ.get(
    "CLARION_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CLARION_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def publisher(url: str, seconds: float, shared: bool, ready: Any, results: Any) -> None:
    reset_settings(Settings.from_env({"CLARION_DATABASE_URL": url, "CLARION_REDIS_URL": REDIS_URL}))
    import clarion

    auction = uuid.uuid4()
    channels = ["bid"] if shared else None
    # One warm-up call: connections and imports are not the publisher's rate.
    clarion.publish_event(
        "bid_placed", event_data={"bid_amount": 0}, auction_id=auction, broadcast_channels=channels
    )
    ready.wait()  # every publisher starts at once
    cpu = time.process_time()
    durations: list[float] = []
    end = time.perf_counter() + seconds
    amount = 1
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        clarion.publish_event(
            "bid_placed",
            event_data={"bid_amount": amount},
            auction_id=auction,
            broadcast_channels=channels,
        )
        durations.append(time.perf_counter() - t0)
        amount += 1
    results.put((durations, time.process_time() - cpu))


def run(url: str, publishers: int, seconds: float, shared: bool) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Barrier(publishers)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=publisher, args=(url, seconds, shared, ready, results))
        for _ in range(publishers)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=300) for _ in procs]
    calls = sorted(d for durations, _cpu in got for d in durations)
    cpu = sum(c for _durations, c in got)
    for p in procs:
        p.join()
    return {
        "publishers": publishers,
        "lock": "shared topic" if shared else "default topic",
        "events": len(calls),
        "rate": len(calls) / seconds,
        "p50_ms": statistics.median(calls) * 1000,
        "p99_ms": calls[int(len(calls) * 0.99) - 1] * 1000,
        "publisher_cpu_ms_per_event": cpu / len(calls) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--publishers", default="1,16")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    name = f"clarion_bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    results = []
    try:
        migrate.upgrade(url)
        for shared in (True, False):
            for count in (int(p) for p in args.publishers.split(",")):
                r = run(url, count, args.seconds, shared)
                results.append(r)
                print(
                    f"{r['lock']:13} {count:>2} publishers: {r['rate']:,.0f} events/s,"
                    f" call p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms,"
                    f" publisher CPU {r['publisher_cpu_ms_per_event']:.2f} ms per event",
                    flush=True,
                )
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print("\n| ordering lock | publishers | events/s | vs one publisher | call p50 / p99 |")
    print("|---|---|---|---|---|")
    for r in results:
        one = next(
            (x["rate"] for x in results if x["lock"] == r["lock"] and x["publishers"] == 1), None
        )
        ratio = "-" if one is None else f"{r['rate'] / one:.2f}x"
        print(
            f"| {r['lock']} | {r['publishers']} | {r['rate']:,.0f} | {ratio}"
            f" | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} ms |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
