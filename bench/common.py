"""What the benchmarks share: service URLs, a throw-away database, Clarion's processes.

Every benchmark builds its own PostgreSQL database through the migrations
(``CLARION_TEST_ADMIN_URL``), uses Redis database 14 (``CLARION_BENCH_REDIS_URL``)
or a RabbitMQ vhost (``CLARION_BENCH_AMQP_URL``) and starts the real
``clarion scheduler`` / ``clarion worker`` commands, never worker internals.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ADMIN_URL = os.environ.get(
    "CLARION_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CLARION_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
AMQP_URL = os.environ.get(
    "CLARION_BENCH_AMQP_URL",
    os.environ.get("CLARION_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
)
BROKERS = ("redis", "rabbitmq")


def broker_url(broker: str) -> str:
    """The broker URL of ``redis`` or ``rabbitmq``."""
    if broker == "redis":
        return REDIS_URL
    if broker == "rabbitmq":
        return AMQP_URL
    raise SystemExit(f"unknown broker {broker!r}: expected one of {', '.join(BROKERS)}")


def reset_broker(url: str) -> None:
    """Empty the bench broker: flush its Redis database or purge Clarion's and the
    no-op's RabbitMQ queues (the vhost may hold other queues: only ours are purged)."""
    if url.startswith("amqp"):
        import pika

        from workers.queues import all_queues

        conn = pika.BlockingConnection(pika.URLParameters(url))
        try:
            for q in [*all_queues(), "noop"]:
                for name in (q, f"{q}.DQ", f"{q}.XQ"):
                    channel = conn.channel()
                    with contextlib.suppress(pika.exceptions.ChannelClosedByBroker):
                        channel.queue_purge(name)
                    if channel.is_open:
                        channel.close()
        finally:
            conn.close()
    else:
        import redis

        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()


def load_average() -> tuple[float, float, float]:
    """The machine's 1, 5 and 15 minute load averages (the noise every figure carries)."""
    return os.getloadavg()


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    """A fresh database built by the migrations, dropped afterwards; yields its URL."""
    from clarion import migrate
    from clarion.core.db import make_engine

    name = f"clarion_bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def clarion_env(db_url: str, broker: str, **extra: str) -> dict[str, str]:
    """The environment of Clarion's processes for one bench run."""
    return {
        **os.environ,
        "CLARION_DATABASE_URL": db_url,
        "CLARION_BROKER_URL": broker_url(broker),
        "CLARION_REDIS_URL": REDIS_URL,
        "CLARION_WEBHOOK_ALLOW_PRIVATE": "true",
        "CLARION_LOG_LEVEL": "WARNING",
        # /metrics off: fixed ports would collide with other runs on the machine.
        "CLARION_WORKER_METRICS_PORT": "0",
        "CLARION_SCHEDULER_METRICS_PORT": "0",
        **extra,
    }


def start_clarion(
    env: dict[str, str], processes: int, threads: int, *, schedulers: int = 1
) -> list[subprocess.Popen[bytes]]:
    """``clarion scheduler`` (``schedulers`` of them) and one ``clarion worker``; the
    worker is last in the list."""
    cli = [sys.executable, "-m", "clarion"]
    procs = [subprocess.Popen([*cli, "scheduler"], env=env) for _ in range(schedulers)]
    procs.append(
        subprocess.Popen(
            [*cli, "worker", "--processes", str(processes), "--threads", str(threads)], env=env
        )
    )
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Terminate the processes we started, killing those that do not stop in 30 s."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(
    engine: sa.Engine,
    query: sa.TextClause,
    target: int,
    *,
    params: dict[str, object] | None = None,
    timeout: float = 600.0,
    procs: list[subprocess.Popen[bytes]] | None = None,
    every: float = 0.05,
    on_tick: object = None,
) -> float:
    """Poll ``query`` (a count) until it reaches ``target``; seconds waited.

    Raises SystemExit naming what did not happen when ``timeout`` passes or a
    process of ``procs`` exits first.
    """
    start = time.perf_counter()
    with engine.connect() as conn:
        while True:
            count = int(conn.execute(query, params or {}).scalar_one())
            conn.rollback()
            if count >= target:
                return time.perf_counter() - start
            if callable(on_tick):
                on_tick()
            for proc in procs or []:
                if proc.poll() is not None:
                    raise SystemExit(
                        f"{' '.join(map(str, proc.args))} exited ({proc.returncode})"
                        f" with {count} of {target} done"
                    )
            if time.perf_counter() - start > timeout:
                raise SystemExit(f"only {count} of {target} done after {timeout:.0f} s")
            time.sleep(every)
