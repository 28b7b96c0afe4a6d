"""Benchmark: the scheduler's claim + enqueue, one message per round trip vs one batch.

N in-app notifications are inserted at once; a real :class:`Scheduler`
(``scheduler.runtime.build_scheduler``, the broker of ``clarion scheduler``)
claims them all with ``run_once`` in this process, no workers. ``per-message``
enqueues the way the scheduler did before (``broker.enqueue`` for each
message, stopping at the first failure); ``bulk`` is the scheduler as it is
(``workers.enqueue.enqueue_many``). The modes alternate, ``--rounds`` times,
each on a fresh database and an emptied broker.

    CLARION_BENCH_REDIS_URL=redis://127.0.0.1:6379/14 \\
    CLARION_BENCH_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/bench \\
    .venv/bin/python bench/scheduler_enqueue.py -n 20000 --rounds 2 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from harness import reset_broker  # type: ignore[import-not-found]  # noqa: E402

from clarion import migrate  # noqa: E402
from clarion.core.db import make_engine  # noqa: E402
from clarion.core.errors import BrokerUnavailable  # noqa: E402
from clarion.core.settings import Settings  # noqa: E402
from clarion.followups import FollowUps  # noqa: E402
from scheduler.daemon import Scheduler  # noqa: E402
from scheduler.outage import describe  # noqa: E402
from scheduler.runtime import build_scheduler  # noqa: E402
from workers.actors import declare_actors  # noqa: E402
from workers.broker import make_broker  # noqa: E402
from workers.runtime import get_deliverer  # noqa: E402

ADMIN_URL = os.environ.get(
    "CLARION_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BROKERS = {
    "redis": os.environ.get("CLARION_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
    "rabbitmq": os.environ.get("CLARION_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
}


class PerMessageScheduler(Scheduler):
    """The scheduler's enqueue before batching: one ``broker.enqueue`` per message."""

    def _flush_unsent(self) -> None:
        while self._unsent:
            message = self._unsent[0]
            try:
                self.broker.enqueue(message)
            except Exception as exc:
                raise BrokerUnavailable(f"enqueue failed ({describe(exc)})") from exc
            self._taken(message)


def one_run(broker_name: str, mode: str, n: int, batch: int) -> dict[str, Any]:
    name = f"clarion_bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    broker_url = BROKERS[broker_name]
    reset_broker(broker_url)
    try:
        migrate.upgrade(url)
        engine = make_engine(url)
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO notifications (user_id, notification_type, category, priority,"
                    " title, message, delivery_channels) SELECT :u, 'in_app', 'bid', 'normal',"
                    " 'Bench ' || g, 'Bench message ' || g, '[\"in_app\"]'::jsonb"
                    " FROM generate_series(1, :n) AS g"
                ),
                {"u": uuid.uuid4(), "n": n},
            )
        settings = Settings.from_env(
            {
                "CLARION_DATABASE_URL": url,
                "CLARION_BROKER_URL": broker_url,
                "CLARION_BATCH_SIZE": str(batch),
            }
        )
        broker = make_broker(settings, enqueue_only=True)
        actors = declare_actors(broker, get_deliverer)
        scheduler = build_scheduler(settings, broker, actors, follow_ups=FollowUps(settings))
        if mode == "per-message":
            scheduler.__class__ = PerMessageScheduler
        start = time.perf_counter()
        enqueued = scheduler.run_once(sweep=False)
        elapsed = time.perf_counter() - start
        broker.close()
        engine.dispose()
        assert enqueued == n, (enqueued, n)
        return {
            "broker": broker_name,
            "mode": mode,
            "n": n,
            "seconds": elapsed,
            "rate": n / elapsed,
        }
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=500, help="CLARION_BATCH_SIZE")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--broker", choices=[*BROKERS, "both"], default="both")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    brokers = list(BROKERS) if args.broker == "both" else [args.broker]
    results = []
    for round_ in range(args.rounds):
        for broker_name in brokers:
            for mode in ("per-message", "bulk"):
                r = one_run(broker_name, mode, args.n, args.batch)
                r["round"] = round_ + 1
                results.append(r)
                print(
                    f"round {r['round']} {broker_name:8} {mode:11} {r['n']:>6} deliveries"
                    f" in {r['seconds']:.2f} s: {r['rate']:,.0f}/s",
                    flush=True,
                )
    print("\n| broker | one round trip per message | one batch per round trip | ratio |")
    print("|---|---|---|---|")
    for broker_name in brokers:
        mine = [r for r in results if r["broker"] == broker_name]
        per = [r["rate"] for r in mine if r["mode"] == "per-message"]
        bulk = [r["rate"] for r in mine if r["mode"] == "bulk"]
        print(
            f"| {broker_name} | {', '.join(f'{x:,.0f}/s' for x in per)}"
            f" | {', '.join(f'{x:,.0f}/s' for x in bulk)}"
            f" | {sum(bulk) / sum(per):.2f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
