"""Benchmark: ``clarion web``'s application and inbox API, over loopback HTTP.

It creates its own PostgreSQL database, starts a real ``clarion web``
(``--workers``, default 2) and times, from ``--clients`` threads (default 16)
each with a keep-alive connection:

1. ``POST /v1/notifications`` (one notification per request, a transaction each);
2. the same with an ``Idempotency-Key`` (one more row in the same transaction);
3. ``POST /v1/notifications/bulk`` with 100 notifications per request;
4. ``GET /v1/inbox/count`` (a user's badge; JWT checked on every request).

    CLARION_BENCH_REDIS_URL=redis://127.0.0.1:6379/14 \\
    .venv/bin/python bench/web_api.py [-n 2000] [--clients 16] [--workers 2]

Run by hand; it prints requests per second and latency percentiles.
Nothing here is a timed unit test.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clarion import migrate  # noqa: E402
from clarion.core.db import make_engine  # noqa: E402
from realtime.auth import make_token  # noqa: E402

ADMIN_URL = os.environ.get(
    "CLARION_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CLARION_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
SECRET = "bench-secret-0123456789abcdef0123456789"  # noqa: S105 (a bench token key)
CLARION = str(Path(sys.executable).with_name("clarion"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed(
    label: str, n: int, clients: int, call: Callable[[httpx.Client, int], httpx.Response]
) -> None:
    local = __import__("threading").local()

    def one(i: int) -> float:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=30)
        start = time.perf_counter()
        r = call(local.client, i)
        assert r.status_code < 300, r.text
        return time.perf_counter() - start

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        latencies = sorted(pool.map(one, range(n)))
    elapsed = time.perf_counter() - started
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    print(
        f"{label:<44} {n / elapsed:>8,.0f} req/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms"
        f"   (mean {statistics.fmean(latencies) * 1000:.1f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    name = f"clarion_bench_web_{uuid.uuid4().hex[:8]}"
    admin = make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CLARION_")},
        "CLARION_DATABASE_URL": url,
        "CLARION_REDIS_URL": REDIS_URL,
        "CLARION_JWT_SECRET": SECRET,
        "CLARION_WEB_SESSION_SECRET": SECRET,
        "CLARION_LOG_LEVEL": "WARNING",
    }
    web = None
    try:
        migrate.upgrade(url)
        made = subprocess.run(
            [CLARION, "apikey", "create", "bench", "--scope", "send"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        key = made.stdout.rsplit(": ", 1)[-1].strip()
        web = subprocess.Popen(
            [CLARION, "web", "--port", str(port), "--workers", str(args.workers)], env=env
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        auth = {"Authorization": f"Bearer {key}"}
        user = str(uuid.uuid4())
        body = {
            "user_id": user,
            "title": "You were outbid",
            "message": "Someone bid more on lot 7.",
            "category": "bid",
            "channels": ["in_app", "email"],
        }
        print(f"clarion web --workers {args.workers}, {args.clients} clients, n={args.n}")
        timed(
            "POST /v1/notifications",
            args.n,
            args.clients,
            lambda c, _i: c.post(f"{base}/v1/notifications", json=body, headers=auth),
        )
        timed(
            "POST /v1/notifications + Idempotency-Key",
            args.n,
            args.clients,
            lambda c, i: c.post(
                f"{base}/v1/notifications",
                json=body,
                headers={**auth, "Idempotency-Key": f"bench-{i}"},
            ),
        )
        bulk = {"notifications": [body] * 100}
        requests = max(1, args.n // 100)
        started = time.perf_counter()
        timed(
            "POST /v1/notifications/bulk (100 each)",
            requests,
            min(args.clients, 4),
            lambda c, _i: c.post(f"{base}/v1/notifications/bulk", json=bulk, headers=auth),
        )
        per = requests * 100 / (time.perf_counter() - started)
        print(f"{'  = notifications created per second':<44} {per:>8,.0f}")
        token = {"Authorization": f"Bearer {make_token(user, SECRET)}"}
        timed(
            "GET /v1/inbox/count",
            args.n,
            args.clients,
            lambda c, _i: c.get(f"{base}/v1/inbox/count", headers=token),
        )
    finally:
        if web is not None:
            web.send_signal(signal.SIGTERM)
            web.wait(30)
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


if __name__ == "__main__":
    main()
