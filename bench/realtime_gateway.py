"""Benchmark: one ``clarion gateway`` process, 5,000 idle connections, 1,000-subscriber fan-out.

Starts a real gateway against a fresh PostgreSQL database and Redis (db 12),
opens ``--connections`` WebSocket connections from ``--clients`` client
processes (compression off on both sides), and reports:

* memory: the gateway's RSS after the connections are open and idle, minus
  its RSS before the first one, divided by the number of connections;
* fan-out latency: ``--events`` events for an auction with ``--subscribers``
  subscribers, each published with ``clarion.publish_event`` (row insert,
  commit, Redis publish); latency is from just before ``publish_event`` is
  called to the client receiving the frame, over every (event, subscriber).

    .venv/bin/python bench/realtime_gateway.py [--connections 5000] [--subscribers 1000]

Run by hand; it prints its figures. Nothing here is a timed unit test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import signal
import socket
import statistics
import subprocess
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
from realtime.auth import make_token  # noqa: E402

ADMIN_URL = os.environ.get(
    "CLARION_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CLARION_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
SECRET = "bench-secret-0123456789-0123456789-abcdef"  # noqa: S105 - a local bench key
CLARION = str(Path(sys.executable).with_name("clarion"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client_process(
    url: str, count: int, subscribe: int, auction: str, events: int, conn: Any
) -> None:
    """Open ``count`` connections; the first ``subscribe`` subscribe to ``auction``."""
    from websockets.asyncio.client import connect

    async def main() -> None:
        sockets = []
        sem = asyncio.Semaphore(100)

        async def open_one(i: int) -> None:
            async with sem:
                ws = await connect(
                    f"{url}?token={make_token(uuid.uuid4(), SECRET)}",
                    compression=None,
                    open_timeout=60,
                    ping_interval=None,
                )
                await ws.recv()  # welcome
                if i < subscribe:
                    await ws.send(json.dumps({"type": "subscribe", "auctions": [auction]}))
                    await ws.recv()  # subscribed
                sockets.append((i, ws))

        await asyncio.gather(*(open_one(i) for i in range(count)))
        conn.send(("ready", len(sockets)))
        latencies: list[float] = []

        async def read(ws: Any) -> None:
            for _ in range(events):
                frame = json.loads(await ws.recv())
                latencies.append(time.time() - frame["data"]["t0"])

        readers = [read(ws) for i, ws in sockets if i < subscribe]
        await asyncio.gather(*readers)
        conn.send(("latencies", latencies))
        conn.recv()  # wait for "close"
        await asyncio.gather(*(ws.close() for _, ws in sockets))

    asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.connections * 2 + 1000))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    name = f"clarion_bench_rt_{uuid.uuid4().hex[:8]}"
    admin = make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    port = free_port()
    env = {
        "CLARION_DATABASE_URL": url,
        "CLARION_REDIS_URL": REDIS_URL,
        "CLARION_JWT_SECRET": SECRET,
        "CLARION_GATEWAY_PORT": str(port),
        "CLARION_EVENTS_CHANNEL": f"clarion:bench:events:{uuid.uuid4().hex[:8]}",
        "CLARION_LOG_LEVEL": "WARNING",
    }
    settings = Settings.from_env(env)
    reset_settings(settings)
    gateway = subprocess.Popen(
        [CLARION, "gateway"],
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    procs: list[tuple[mp.Process, Any]] = []
    try:
        assert gateway.stdout is not None
        line = gateway.stdout.readline().decode()
        assert "listening" in line, line
        time.sleep(1.0)
        base = rss_kib(gateway.pid)
        auction = str(uuid.uuid4())
        per = args.connections // args.clients
        subs_left = args.subscribers
        started = time.monotonic()
        for _ in range(args.clients):
            parent, child = mp.Pipe()
            subs = min(per, subs_left)
            subs_left -= subs
            p = mp.Process(
                target=client_process,
                args=(f"ws://127.0.0.1:{port}/", per, subs, auction, args.events, child),
            )
            p.start()
            procs.append((p, parent))
        opened = sum(parent.recv()[1] for _, parent in procs)
        connect_time = time.monotonic() - started
        time.sleep(7.0)  # let the batched row writes and one counter flush settle
        rss = rss_kib(gateway.pid)
        engine = make_engine(url)
        with engine.connect() as c:
            rows = c.execute(
                sa.text(
                    "SELECT count(*) FROM websocket_connections "
                    "WHERE connection_status = 'connected'"
                )
            ).scalar_one()
        print(
            f"connections open: {opened} (rows 'connected': {rows}), opened in {connect_time:.1f} s"
        )
        print(
            f"gateway RSS: {base / 1024:.1f} MiB before, {rss / 1024:.1f} MiB with "
            f"{opened} idle connections -> {(rss - base) / opened:.1f} KiB per connection "
            f"(compression off)"
        )

        from clarion import publish_event

        publish_times = []
        for _ in range(args.events):
            t0 = time.time()
            publish_event(
                "bid_placed",
                auction_id=auction,
                visibility="public",
                event_data={"t0": t0, "bid_amount": 150.0},
            )
            publish_times.append(time.time() - t0)
            time.sleep(0.25)
        latencies: list[float] = []
        for _, parent in procs:
            _kind, values = parent.recv()
            latencies.extend(values)
        latencies.sort()
        q = statistics.quantiles(latencies, n=100)
        print(
            f"fan-out: {args.events} events x {args.subscribers} subscribers, "
            f"{len(latencies)} deliveries"
        )
        print(
            f"publish -> receipt latency: p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, "
            f"max {latencies[-1] * 1000:.1f} ms"
        )
        print(
            f"publish_event call (insert, commit, Redis publish): "
            f"median {statistics.median(publish_times) * 1000:.1f} ms"
        )
        for _, parent in procs:
            parent.send("close")
        for p, _ in procs:
            p.join(60)
        engine.dispose()
    finally:
        for p, _ in procs:
            if p.is_alive():
                p.kill()
        gateway.send_signal(signal.SIGTERM)
        try:
            gateway.wait(60)
        except subprocess.TimeoutExpired:
            gateway.kill()
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
