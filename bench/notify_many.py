"""Benchmark: an auction's end for N watchers with ``clarion.notify_many``.

On a fresh database: N watchers (a tenth with a stored German locale, a
tenth French), then

1. ``notify()`` in a loop for ``--baseline`` of them, in one transaction
   (what an application did before ``notify_many``), as a rate;
2. ``notify_many`` for all N, ``english/outbid`` rendered per watcher in
   their locale, one idempotency key each, in-app: seconds to commit;
3. a real ``clarion scheduler`` and ``clarion worker --processes P --threads
   T`` started then: seconds until every in-app delivery is written back.

    CLARION_BENCH_REDIS_URL=redis://127.0.0.1:6379/14 \\
    .venv/bin/python bench/notify_many.py -n 20000 [--broker redis|rabbitmq] [--batch-size 2000] \\
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from harness import reset_broker  # type: ignore[import-not-found]  # noqa: E402

from clarion import migrate  # noqa: E402
from clarion.core.db import make_engine  # noqa: E402
from clarion.core.settings import Settings, reset_settings  # noqa: E402

ADMIN_URL = os.environ.get(
    "CLARION_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CLARION_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
AMQP_URL = os.environ.get("CLARION_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--baseline", type=int, default=1000)
    parser.add_argument("--broker", choices=["redis", "rabbitmq"], default="redis")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument(
        "--batch-size",
        type=int,
        help="the scheduler's CLARION_BATCH_SIZE (notifications claimed per batch; default 500)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    broker_url = REDIS_URL if args.broker == "redis" else AMQP_URL
    name = f"clarion_bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    reset_broker(broker_url)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        migrate.upgrade(url)
        reset_settings(
            Settings.from_env({"CLARION_DATABASE_URL": url, "CLARION_REDIS_URL": REDIS_URL})
        )
        from sqlalchemy.orm import Session

        import clarion

        engine = make_engine(url)
        watchers = [uuid.uuid4() for _ in range(args.n)]
        with Session(engine) as s, s.begin():
            for i, user in enumerate(watchers):
                if i % 10 == 1:
                    clarion.set_locale(user, "de", session=s)
                elif i % 10 == 2:
                    clarion.set_locale(user, "fr", session=s)
        common = {
            "template": "english/outbid",
            "template_data": {"amount": clarion.money("1234.5", "EUR")},
            "channels": ["in_app"],
            "auction_id": uuid.uuid4(),
        }
        # 1. notify() in a loop, one transaction (rolled back: the watchers get theirs below).
        start = time.perf_counter()
        with Session(engine) as s, s.begin():
            for user in watchers[: args.baseline]:
                clarion.notify(user, idempotency_key=f"base:{user}", session=s, **common)
            loop_seconds = time.perf_counter() - start
            s.rollback()
        loop_rate = args.baseline / loop_seconds
        # 2. notify_many for everyone.
        start = time.perf_counter()
        ids = clarion.notify_many(
            [{"user_id": u, "idempotency_key": f"ended:{u}"} for u in watchers], **common
        )
        created = time.perf_counter() - start
        assert len(ids) == args.n
        # 3. the pipeline.
        env = {
            **os.environ,
            "CLARION_DATABASE_URL": url,
            "CLARION_BROKER_URL": broker_url,
            "CLARION_REDIS_URL": REDIS_URL,
            "CLARION_LOG_LEVEL": "WARNING",
            # No /metrics listeners: their fixed ports may be taken on a shared machine.
            "CLARION_WORKER_METRICS_PORT": "0",
            "CLARION_SCHEDULER_METRICS_PORT": "0",
        }
        if args.batch_size:
            env["CLARION_BATCH_SIZE"] = str(args.batch_size)
        # Claimed: a delivery row exists (the scheduler's claim writes it).
        progress_q = sa.text(
            "SELECT count(*), count(*) FILTER (WHERE status = 'delivered')"
            " FROM notification_deliveries"
        )
        start = time.perf_counter()
        procs = [
            subprocess.Popen([sys.executable, "-m", "clarion", "scheduler"], env=env),
            subprocess.Popen(
                [
                    sys.executable,
                    *("-m", "clarion", "worker"),
                    *("--processes", str(args.processes), "--threads", str(args.threads)),
                ],
                env=env,
            ),
        ]
        first_delivered = all_claimed = None
        with engine.connect() as conn:
            while True:
                claimed, done = conn.execute(progress_q).one()
                conn.rollback()
                now = time.perf_counter() - start
                if done and first_delivered is None:
                    first_delivered = now
                if claimed >= args.n and all_claimed is None:
                    all_claimed = now
                if done >= args.n:
                    break
                if now > 600:
                    raise SystemExit("not delivered within 600 s")
                time.sleep(0.1)
        delivered = time.perf_counter() - start
        engine.dispose()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
        reset_settings(None)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    result = {
        "broker": args.broker,
        "batch_size": args.batch_size,
        "n": args.n,
        "notify_loop_rate": loop_rate,
        "notify_many_seconds": created,
        "notify_many_rate": args.n / created,
        "first_delivered_seconds": first_delivered,
        "all_claimed_seconds": all_claimed,
        "delivered_seconds": delivered,
        "delivered_rate": args.n / delivered,
    }
    print("| step | figure |\n|---|---|")
    print(f"| `notify()` in a loop, one transaction | {loop_rate:,.0f}/s |")
    print(f"| `notify_many`, {args.n:,} watchers | {created:.2f} s ({args.n / created:,.0f}/s) |")
    print(
        f"| all {args.n:,} in-app deliveries written back ({args.broker},"
        f" {args.processes} x {args.threads}) | {delivered:.1f} s ({args.n / delivered:,.0f}/s) |"
    )
    print(
        f"| of which: first delivery written back (processes' start-up) | {first_delivered:.1f} s |"
    )
    print(f"| of which: all {args.n:,} claimed by the scheduler | {all_claimed:.1f} s |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
