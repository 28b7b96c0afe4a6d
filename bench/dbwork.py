"""Benchmark: the database work per delivery, end to end (scheduler + worker), measured.

For each channel (``in_app``, ``webhook`` to the webhook sandbox), on a fresh
database: N notifications created one ``clarion.notify`` call each, then
delivered by a real ``clarion scheduler`` and ``clarion worker``. Counted:

* rows inserted / updated / deleted per table, from ``pg_stat_user_tables``
  (taken with every counting backend gone, so their counters are flushed);
* SQL statements by verb and commits (an executemany counts once, and once per
  parameter set under "server side"), counted client-side in every Clarion
  process by SQLAlchemy events (``bench/sqlcount/sitecustomize.py`` on their
  PYTHONPATH), so pg_stat_statements is not needed;
* the most database connections open at once (``pg_stat_activity``), less the
  bench's own;
* Redis commands by name while delivering (``INFO commandstats``, the broker's
  and the in-app PUBLISH; the bench's own counters left out);
* the statements the processes run while idle (their polling loops), over
  ``--idle-seconds`` after the last delivery, to subtract from the busy phase.

    python -m bench dbwork [-n 2000] [--channel in_app,webhook] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common, report  # noqa: E402
from bench.throughput import CHANNELS, DELIVERED, Receiver, csv  # noqa: E402

SQLCOUNT = ROOT / "bench" / "sqlcount"
CONNECTIONS = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
TABLES = sa.text(
    "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables ORDER BY relname"
)
CREATE = """
import sys, uuid
import clarion
users = [uuid.UUID(u) for u in sys.argv[2].split(",")]
for i in range(int(sys.argv[1])):
    clarion.notify(users[i % len(users)], title="Work", message=f"work {i}", category="bid",
                   channels=[sys.argv[3]])
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench dbwork",
        description="Statements and rows written per delivery, creation and delivery apart.",
    )
    p.add_argument("-n", type=int, default=2000, help="notifications per channel")
    p.add_argument("--channel", type=csv(str, CHANNELS), default=list(CHANNELS))
    p.add_argument("--broker", type=csv(str, common.BROKERS), default=["redis"])
    p.add_argument("--users", type=int, default=200, help="recipients the notifications share")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=32)
    p.add_argument("--idle-seconds", type=float, default=5.0)
    p.add_argument("--json", type=Path, help="default bench/results/dbwork-<time>.json")
    return p


def table_counts(url: str) -> dict[str, tuple[int, int, int]]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in conn.execute(TABLES)}
    finally:
        engine.dispose()


def diff(
    after: dict[str, tuple[int, int, int]], before: dict[str, tuple[int, int, int]]
) -> dict[str, dict[str, int]]:
    out = {}
    for name, (i, u, d) in after.items():
        bi, bu, bd = before.get(name, (0, 0, 0))
        if (i - bi, u - bu, d - bd) != (0, 0, 0):
            out[name] = {"inserted": i - bi, "updated": u - bu, "deleted": d - bd}
    return out


def settled(client: redis.Redis, key: str) -> dict[str, int]:
    """The counts of ``key`` once two reads 0.5 s apart agree (the flush threads caught up)."""
    last: dict[str, int] | None = None
    while True:
        now = {k.decode(): int(v) for k, v in client.hgetall(key).items()}
        if now == last:
            return now
        last = now
        time.sleep(0.5)


#: The bench's own Redis commands (the statement counters), left out of Clarion's.
OWN_COMMANDS = {"hincrby", "hgetall", "info", "del", "ping", "client|setinfo", "hello"}


def redis_calls(client: redis.Redis) -> dict[str, int]:
    """Commands the Redis server has run, by name (INFO commandstats), less the bench's."""
    stats = client.info("commandstats")
    return {
        k.removeprefix("cmdstat_"): int(v["calls"])
        for k, v in stats.items()
        if k.removeprefix("cmdstat_") not in OWN_COMMANDS
    }


def minus(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) - b.get(k, 0) for k in sorted(set(a) | set(b))}


def run(broker: str, channel: str, args: argparse.Namespace) -> dict[str, Any]:
    from clarion.core.db import make_engine

    counter = redis.Redis.from_url(common.REDIS_URL)
    key = f"bench:sqlcount:{uuid.uuid4().hex}"
    count_env = {
        "CLARION_SQLCOUNT_KEY": key,
        "CLARION_SQLCOUNT_REDIS": common.REDIS_URL,
        "PYTHONPATH": os.pathsep.join([str(SQLCOUNT), str(ROOT)]),
    }
    receiver = Receiver(0.0) if channel == "webhook" else None
    with common.scratch_database() as url:
        common.reset_broker(common.broker_url(broker))
        env = common.clarion_env(url, broker, **count_env)
        users = [uuid.uuid4() for _ in range(args.users)]
        hook = receiver.__enter__() if receiver else None
        procs: list[subprocess.Popen[bytes]] = []
        try:
            engine = make_engine(url, poolclass=sa.NullPool)
            if hook:
                with engine.begin() as conn:
                    for u in users:
                        conn.execute(
                            sa.text(
                                "INSERT INTO user_addresses (user_id, channel, address)"
                                " VALUES (:u, 'webhook', :a)"
                            ),
                            {"u": u, "a": hook},
                        )
            before = table_counts(url)
            subprocess.run(
                [sys.executable, "-c", CREATE, str(args.n), ",".join(map(str, users)), channel],
                env=env,
                check=True,
            )
            created = table_counts(url)
            create_sql = settled(counter, key)
            redis_before = redis_calls(counter)
            procs = common.start_clarion(env, args.processes, args.threads)
            peak = [0]

            def connections() -> None:
                # The database connections Clarion's processes hold at full load.
                with engine.connect() as conn:
                    now = conn.execute(CONNECTIONS).scalar_one()
                peak[0] = max(peak[0], int(now) - 2)  # less the bench's two

            busy = common.wait_for(
                engine,
                DELIVERED.bindparams(title="Work"),
                args.n,
                procs=procs,
                every=0.25,
                on_tick=connections,
            )
            at_done = settled(counter, key)
            redis_busy = minus(redis_calls(counter), redis_before)
            time.sleep(args.idle_seconds)
            idle_end = settled(counter, key)
        finally:
            common.stop(procs)
            if receiver:
                receiver.__exit__()
        time.sleep(1.0)  # the backends of the stopped processes flush their counters
        delivered = table_counts(url)
        engine.dispose()
    counter.delete(key)
    counter.close()
    idle = minus(idle_end, at_done)
    deliver_sql = minus(at_done, create_sql)
    per_s = {k: v / args.idle_seconds for k, v in idle.items()}
    corrected = {k: max(0.0, v - per_s.get(k, 0) * busy) for k, v in deliver_sql.items()}
    n = args.n
    return {
        "broker": broker,
        "channel": channel,
        "n": n,
        "deliver_seconds": busy,
        "max_connections": peak[0],
        "create": {
            "rows": diff(created, before),
            "statements": create_sql,
        },
        "deliver": {
            "rows": diff(delivered, created),
            "statements": deliver_sql,
            "statements_idle_per_second": per_s,
            "statements_less_idle": corrected,
            "redis_commands": redis_busy,
        },
        "per_delivery": {
            "create_statements": create_sql.get("statements", 0) / n,
            "create_commits": create_sql.get("commits", 0) / n,
            "create_rows_written": _written(diff(created, before)) / n,
            "deliver_statements": corrected.get("statements", 0) / n,
            "deliver_statements_server": corrected.get("statements_server", 0) / n,
            "deliver_commits": corrected.get("commits", 0) / n,
            "deliver_rows_written": _written(diff(delivered, created)) / n,
            "redis_commands": sum(redis_busy.values()) / n if broker == "redis" else None,
        },
        "load_average": list(common.load_average()),
    }


def _written(rows: dict[str, dict[str, int]]) -> int:
    return sum(r["inserted"] + r["updated"] + r["deleted"] for r in rows.values())


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.n < 1 or args.users < 1:
        raise SystemExit("-n and --users: at least 1")
    runs = []
    for broker in args.broker:
        for channel in args.channel:
            r = run(broker, channel, args)
            runs.append(r)
            print(f"{channel}, {broker}: done, load average {r['load_average'][0]:.1f}", flush=True)
    print(f"\n{args.n:,} notifications per channel, figures per delivery")
    rows = []
    for r in runs:
        p = r["per_delivery"]
        rows.append(
            (
                r["channel"],
                r["broker"],
                p["create_statements"],
                p["create_commits"],
                p["create_rows_written"],
                p["deliver_statements"],
                p["deliver_statements_server"],
                p["deliver_commits"],
                p["deliver_rows_written"],
                r["max_connections"],
                f"{r['load_average'][0]:.1f}",
            )
        )
    print(
        report.table(
            [
                "channel",
                "broker",
                "create: statements",
                "commits",
                "rows written",
                "deliver: statements",
                "(server side)",
                "commits",
                "rows written",
                "DB connections",
                "load avg",
            ],
            rows,
        )
    )
    for r in runs:
        print(f"\nrows per delivery, {r['channel']} ({r['broker']}):")
        for phase in ("create", "deliver"):
            for table, c in sorted(r[phase]["rows"].items()):
                print(
                    f"  {phase:<8}{table:<26} +{c['inserted'] / r['n']:.2f} ins"
                    f"  {c['updated'] / r['n']:.2f} upd  {c['deleted'] / r['n']:.2f} del"
                )
        verbs = r["deliver"]["statements_less_idle"]
        print(
            "  Redis commands (broker and in-app publish, idle polling included): "
            + ", ".join(
                f"{k} {v / r['n']:.2f}"
                for k, v in sorted(r["deliver"]["redis_commands"].items())
                if v
            )
        )
        shown = {k: v for k, v in verbs.items() if not k.startswith("statements")}
        print(
            "  deliver statements by verb: "
            + ", ".join(f"{k} {v / r['n']:.2f}" for k, v in shown.items())
        )
    path = report.write_json(
        args.json or report.default_json("dbwork"),
        {"benchmark": "dbwork", "args": vars(args), "runs": runs},
    )
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
