"""Benchmark: end-to-end throughput and latency against a bare no-op Dramatiq actor.

1. bare: N messages to a no-op actor (`bench/noop_actor.py`) drained by
   ``dramatiq --processes P --threads T`` on the same Redis;
2. clarion: N in-app notifications (bulk INSERT; the in-app provider is a Redis
   PUBLISH, the cheapest real provider) claimed by ``clarion scheduler`` and
   delivered by ``clarion worker --processes P --threads T``; time from the
   start of the processes to the last delivery written back;
3. latency at low load: notifications created one at a time with
   ``clarion.notify``; creation -> provider acceptance (``delivered_at -
   created_at`` of the delivery row), p50 and p99;
4. latency under load: notifications created at half the throughput measured
   in 2. for ``--load-seconds``, creation -> acceptance p50 and p99.

    .venv/bin/python bench/throughput.py [-n 10000] [--processes 2] [--threads 32]
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

from clarion import migrate  # noqa: E402
from clarion.core.db import make_engine  # noqa: E402
from clarion.core.settings import Settings, reset_settings  # noqa: E402

ADMIN_URL = os.environ.get(
    "CLARION_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CLARION_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
BIN = Path(sys.executable).parent


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def bare(n: int, processes: int, threads: int) -> float:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    env = {**os.environ, "CLARION_BROKER_URL": REDIS_URL, "PYTHONPATH": str(ROOT / "bench")}
    sys.path.insert(0, str(ROOT / "bench"))
    os.environ["CLARION_BROKER_URL"] = REDIS_URL
    import noop_actor  # type: ignore[import-not-found]

    for i in range(n):
        noop_actor.noop.send(i)
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                str(BIN / "dramatiq"),
                "noop_actor",
                "--processes",
                str(processes),
                "--threads",
                str(threads),
            ],
            env=env,
            cwd=ROOT / "bench",
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        while int(client.get("bench:noop:done") or 0) < n:
            time.sleep(0.01)
        return time.perf_counter() - start
    finally:
        stop(procs)


def steady_load(
    engine: sa.Engine, user: uuid.UUID, *, rate: float, seconds: float
) -> tuple[float, float, float, int]:
    """Create notifications at ``rate``/s for ``seconds``; creation -> accepted p50/p99.

    Returns (achieved rate, p50 s, p99 s, count).
    """
    tick = 0.05
    per_tick = max(1, round(rate * tick))
    insert = sa.text(
        "INSERT INTO notifications (user_id, notification_type, category, priority,"
        " title, message, delivery_channels) SELECT :u, 'in_app', 'bid', 'normal',"
        " 'Load', 'Load message ' || g, '[\"in_app\"]'::jsonb FROM generate_series(1, :k) AS g"
    )
    start = time.perf_counter()
    sent = 0
    next_tick = start
    while time.perf_counter() - start < seconds:
        with engine.begin() as conn:
            conn.execute(insert, {"u": user, "k": per_tick})
        sent += per_tick
        next_tick += tick
        time.sleep(max(0.0, next_tick - time.perf_counter()))
    achieved = sent / (time.perf_counter() - start)
    done = sa.text(
        "SELECT count(*) FROM notification_deliveries d JOIN notifications n"
        " USING (notification_id) WHERE n.title = 'Load' AND d.status = 'delivered'"
    )
    deadline = time.time() + 120
    with engine.connect() as conn:
        while conn.execute(done).scalar_one() < sent and time.time() < deadline:
            time.sleep(0.1)
        p50, p99 = conn.execute(
            sa.text(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x),"
                " percentile_cont(0.99) WITHIN GROUP (ORDER BY x) FROM ("
                " SELECT extract(epoch FROM d.delivered_at - n.created_at) AS x"
                " FROM notification_deliveries d JOIN notifications n USING (notification_id)"
                " WHERE n.title = 'Load' AND d.status = 'delivered') AS t"
            )
        ).one()
    return achieved, float(p50), float(p99), sent


def clarion(
    n: int, processes: int, threads: int, probes: int, load_seconds: float
) -> tuple[float, list[float], tuple[float, float, float, int]]:
    name = f"clarion_bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    redis.Redis.from_url(REDIS_URL).flushdb()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        migrate.upgrade(url)
        engine = make_engine(url)
        user = uuid.uuid4()
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO notifications (user_id, notification_type, category, priority,"
                    " title, message, delivery_channels) SELECT :u, 'in_app', 'bid', 'normal',"
                    " 'Bench ' || g, 'Bench message ' || g, '[\"in_app\"]'::jsonb"
                    " FROM generate_series(1, :n) AS g"
                ),
                {"u": user, "n": n},
            )
        env = {
            **os.environ,
            "CLARION_DATABASE_URL": url,
            "CLARION_BROKER_URL": REDIS_URL,
            "CLARION_REDIS_URL": REDIS_URL,
            "CLARION_LOG_LEVEL": "WARNING",
        }
        done_q = sa.text("SELECT count(*) FROM notification_deliveries WHERE status = 'delivered'")
        start = time.perf_counter()
        procs = [
            subprocess.Popen([sys.executable, "-m", "clarion", "scheduler"], env=env),
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "clarion",
                    "worker",
                    "--processes",
                    str(processes),
                    "--threads",
                    str(threads),
                ],
                env=env,
            ),
        ]
        with engine.connect() as conn:
            while conn.execute(done_q).scalar_one() < n:
                time.sleep(0.05)
        elapsed = time.perf_counter() - start

        reset_settings(Settings.from_env({"CLARION_DATABASE_URL": url}))
        import clarion as api

        latencies: list[float] = []
        for _ in range(probes):
            note = api.notify(
                user, title="Probe", message="probe", category="bid", channels=["in_app"]
            )
            q = sa.text(
                "SELECT extract(epoch FROM d.delivered_at - n.created_at) FROM"
                " notification_deliveries d JOIN notifications n USING (notification_id)"
                " WHERE d.notification_id = :id AND d.status = 'delivered'"
            )
            deadline = time.time() + 10
            while time.time() < deadline:
                with engine.connect() as conn:
                    value = conn.execute(q, {"id": note.notification_id}).scalar()
                if value is not None:
                    latencies.append(float(value))
                    break
                time.sleep(0.005)
            time.sleep(0.05)
        under_load = steady_load(engine, user, rate=n / elapsed / 2, seconds=load_seconds)
        return elapsed, latencies, under_load
    finally:
        stop(procs)
        reset_settings(None)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=10000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--probes", type=int, default=50)
    parser.add_argument("--load-seconds", type=float, default=20.0)
    args = parser.parse_args()
    bare_s = bare(args.n, args.processes, args.threads)
    print(f"bare no-op actor : {args.n} messages in {bare_s:.2f} s = {args.n / bare_s:.0f}/s")
    e2e_s, lat, (rate, p50, p99_load, count) = clarion(
        args.n, args.processes, args.threads, args.probes, args.load_seconds
    )
    print(
        f"clarion in_app   : {args.n} deliveries in {e2e_s:.2f} s = {args.n / e2e_s:.0f}/s"
        f"  (ratio {bare_s / e2e_s:.2f} of bare)"
    )
    if lat:
        lat.sort()
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(
            f"low-load latency : creation -> accepted p50 {statistics.median(lat) * 1000:.0f} ms"
            f"  p99 {p99 * 1000:.0f} ms  ({len(lat)} probes)"
        )
    print(
        f"at half the max  : {rate:.0f}/s for {count} notifications, creation -> accepted"
        f" p50 {p50 * 1000:.0f} ms  p99 {p99_load * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
