"""Benchmark: an urgent notification created behind a backlog of routine ones.

Creates N routine webhook notifications (default 10,000) with one bulk INSERT,
starts real ``clarion scheduler`` and ``clarion worker`` processes against a
fresh PostgreSQL database and Redis, waits until the backlog is flowing, then
creates urgent probes with ``clarion.notify`` one at a time and measures, for
each, creation to the provider (the webhook sandbox) receiving it. For
comparison it also sends normal-priority probes the same way, which queue
behind the backlog.

    .venv/bin/python bench/urgent_backlog.py [--backlog 10000] [--probes 5]

Run by hand; it prints its figures. Nothing here is a timed unit test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import stop  # noqa: E402
from channels.sandboxes.webhook import WebhookReceiver  # noqa: E402
from clarion import migrate  # noqa: E402
from clarion.core.db import make_engine  # noqa: E402
from clarion.core.settings import Settings, reset_settings  # noqa: E402

ADMIN_URL = os.environ.get(
    "CLARION_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CLARION_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--probes", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.02, help="webhook latency, s")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=32)
    args = parser.parse_args()

    name = f"clarion_bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    redis.Redis.from_url(REDIS_URL).flushdb()
    receiver = WebhookReceiver().start()
    receiver.latency = args.latency
    procs: list[subprocess.Popen[bytes]] = []
    try:
        migrate.upgrade(url)
        engine = make_engine(url)
        reset_settings(Settings.from_env({"CLARION_DATABASE_URL": url}))
        routine_user, probe_user = uuid.uuid4(), uuid.uuid4()
        with engine.begin() as conn:
            for user, path in ((routine_user, "routine"), (probe_user, "probe")):
                conn.execute(
                    sa.text(
                        "INSERT INTO user_addresses (user_id, channel, address) "
                        "VALUES (:u, 'webhook', :a)"
                    ),
                    {"u": user, "a": f"{receiver.url}/{path}"},
                )
            t = time.perf_counter()
            conn.execute(
                sa.text(
                    "INSERT INTO notifications (user_id, notification_type, category, priority,"
                    " title, message, delivery_channels) SELECT :u, 'webhook', 'bid', 'normal',"
                    " 'Routine ' || g, 'Backlog message ' || g, '[\"webhook\"]'::jsonb"
                    " FROM generate_series(1, :n) AS g"
                ),
                {"u": routine_user, "n": args.backlog},
            )
            insert_s = time.perf_counter() - t
        print(f"backlog: {args.backlog} routine notifications inserted in {insert_s:.2f} s")

        env = {
            **os.environ,
            "CLARION_DATABASE_URL": url,
            "CLARION_BROKER_URL": REDIS_URL,
            "CLARION_REDIS_URL": REDIS_URL,
            "CLARION_WEBHOOK_ALLOW_PRIVATE": "true",
            "CLARION_LOG_LEVEL": "WARNING",
        }
        clarion = [sys.executable, "-m", "clarion"]
        started = time.perf_counter()
        procs.append(subprocess.Popen([*clarion, "scheduler"], env=env))
        procs.append(
            subprocess.Popen(
                [
                    *clarion,
                    "worker",
                    "--processes",
                    str(args.processes),
                    "--threads",
                    str(args.threads),
                ],
                env=env,
            )
        )
        while len(receiver.requests_to("/routine")) < min(300, args.backlog // 10):
            time.sleep(0.05)
        print(f"backlog flowing after {time.perf_counter() - started:.1f} s")

        import clarion as api

        results: dict[str, list[float]] = {"urgent": [], "normal": []}
        backlog_left: list[int] = []
        for priority in ("urgent", "normal"):
            for i in range(args.probes):
                tag = f"{priority}-{i}"
                created = time.time()
                api.notify(
                    probe_user,
                    title=f"Probe {tag}",
                    message="probe",
                    category="auction",
                    priority=priority,
                    channels=["webhook"],
                )
                deadline = time.time() + 300
                while True:
                    seen = [r for r in receiver.requests_to("/probe") if tag.encode() in r.body]
                    if seen:
                        results[priority].append(seen[0].at - created)
                        break
                    if time.time() > deadline:
                        raise SystemExit(f"probe {tag} not delivered in 300 s")
                    time.sleep(0.005)
                if priority == "urgent":
                    backlog_left.append(args.backlog - len(receiver.requests_to("/routine")))
                    time.sleep(0.2)
        for priority, values in results.items():
            print(
                f"{priority:>6} probes: creation -> provider  min {min(values) * 1000:.0f} ms"
                f"  median {statistics.median(values) * 1000:.0f} ms"
                f"  max {max(values) * 1000:.0f} ms"
            )
        print(f"routine backlog still undelivered when each urgent probe arrived: {backlog_left}")
        drained = len(receiver.requests_to("/routine"))
        elapsed = time.perf_counter() - started
        print(f"routine delivered so far: {drained} in {elapsed:.1f} s ({drained / elapsed:.0f}/s)")
    finally:
        stop(procs)
        receiver.stop()
        reset_settings(None)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
