"""Benchmark: ``publish_event`` with 1 and with 16 concurrent publishers.

Each publisher calls ``clarion.publish_event("bid_placed", auction_id=<its
auction>)`` in a loop for ``--seconds``; every publisher has an auction of
its own. A layout ``PxT`` runs P processes of T publisher threads each:
``16x1`` is a process per publisher, ``2x8`` is what two application
processes with eight request threads each do. Measured: events per second
over all publishers, each call's duration (validation, the INSERT and its
commit, Redis PUBLISH) p50 / p99, and CPU per event of the publisher
processes and of the PostgreSQL backends (from ``/proc``), and the share of
the machine left idle during the run.

Two ways of publishing the same events, in the same run:

* ``default topic``: ``broadcast_channels`` left to its default (the
  category ``bid``): the ordering lock is the auction's alone;
* ``shared topic``: ``broadcast_channels=["bid"]`` given explicitly, which
  orders every event of the topic: the auctions' publishers take turns on one
  lock, as every auction event did before the default topic left the lock.

    CLARION_BENCH_REDIS_URL=redis://127.0.0.1:6379/14 \\
    .venv/bin/python bench/publish_events.py --layouts 1x1,16x1,2x8 --seconds 5 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clarion import migrate  # noqa: E402
from clarion.core.db import make_engine  # noqa: E402
from clarion.core.settings import Settings, reset_settings  # noqa: E402

ADMIN_URL = os.environ.get(
    "CLARION_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CLARION_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def publisher(
    url: str, seconds: float, shared: bool, threads: int, ready: Any, results: Any
) -> None:
    """One process: ``threads`` publishers, each on an auction of its own."""
    reset_settings(Settings.from_env({"CLARION_DATABASE_URL": url, "CLARION_REDIS_URL": REDIS_URL}))
    import clarion

    channels = ["bid"] if shared else None
    auctions = [uuid.uuid4() for _ in range(threads)]
    durations: list[list[float]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads + 1)

    def loop(i: int) -> None:
        # One warm-up call: connections and imports are not the publisher's rate.
        clarion.publish_event(
            "bid_placed",
            event_data={"bid_amount": 0},
            auction_id=auctions[i],
            broadcast_channels=channels,
        )
        start.wait()
        end = time.perf_counter() + seconds
        amount = 1
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            clarion.publish_event(
                "bid_placed",
                event_data={"bid_amount": amount},
                auction_id=auctions[i],
                broadcast_channels=channels,
            )
            durations[i].append(time.perf_counter() - t0)
            amount += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    ready.wait()  # every process starts at once
    cpu = time.process_time()
    start.wait()
    for w in workers:
        w.join()
    results.put(([d for ds in durations for d in ds], time.process_time() - cpu))


def backend_cpu(admin: Engine, database: str) -> float:
    """CPU seconds used so far by the PostgreSQL backends connected to ``database``.

    Read from ``/proc`` (the server runs on this machine); the WAL writer and
    checkpointer are not counted.
    """
    with admin.connect() as conn:
        pids = conn.execute(
            sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": database}
        ).scalars()
        total = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def machine_idle() -> float:
    """Idle CPU seconds of the whole machine so far (all cores)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return (int(fields[3]) + int(fields[4])) / os.sysconf("SC_CLK_TCK")


def run(
    admin: Engine, url: str, processes: int, threads: int, seconds: float, shared: bool
) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Barrier(processes + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=publisher, args=(url, seconds, shared, threads, ready, results))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    database = sa.make_url(url).database or ""
    ready.wait()
    db_cpu, idle = backend_cpu(admin, database), machine_idle()
    got = [results.get(timeout=300) for _ in procs]
    db_cpu, idle = backend_cpu(admin, database) - db_cpu, machine_idle() - idle
    calls = sorted(d for durations, _cpu in got for d in durations)
    cpu = sum(c for _durations, c in got)
    for p in procs:
        p.join()
    return {
        "publishers": processes * threads,
        "processes": processes,
        "threads": threads,
        "lock": "shared topic" if shared else "default topic",
        "events": len(calls),
        "rate": len(calls) / seconds,
        "p50_ms": statistics.median(calls) * 1000,
        "p99_ms": calls[int(len(calls) * 0.99) - 1] * 1000,
        "publisher_cpu_ms_per_event": cpu / len(calls) * 1000,
        "database_cpu_ms_per_event": db_cpu / len(calls) * 1000,
        "machine_idle_share": idle / seconds / (os.cpu_count() or 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--layouts",
        default="1x1,16x1,2x8",
        help="publisher layouts, PROCESSESxTHREADS, comma-separated (1x1 is the reference)",
    )
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
            for layout in args.layouts.split(","):
                processes, threads = (int(n) for n in layout.split("x"))
                r = run(admin, url, processes, threads, args.seconds, shared)
                results.append(r)
                print(
                    f"{r['lock']:13} {processes:>2} x {threads:>2}: {r['rate']:,.0f} events/s,"
                    f" call p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, CPU per event:"
                    f" publishers {r['publisher_cpu_ms_per_event']:.2f} ms,"
                    f" database {r['database_cpu_ms_per_event']:.2f} ms;"
                    f" machine idle {r['machine_idle_share']:.0%}",
                    flush=True,
                )
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(
        "\n| ordering lock | processes x threads | events/s | vs one publisher"
        " | call p50 / p99 | CPU per event: publishers / database | machine idle |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        one = next(
            (x["rate"] for x in results if x["lock"] == r["lock"] and x["publishers"] == 1), None
        )
        ratio = "-" if one is None else f"{r['rate'] / one:.2f}x"
        print(
            f"| {r['lock']} | {r['processes']} x {r['threads']} | {r['rate']:,.0f} | {ratio}"
            f" | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} ms"
            f" | {r['publisher_cpu_ms_per_event']:.2f} / {r['database_cpu_ms_per_event']:.2f} ms"
            f" | {r['machine_idle_share']:.0%} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
