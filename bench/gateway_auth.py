"""Benchmark: what a token kind costs the gateway (HS256, RS256, ES256).

1. In-process: ``realtime.auth.Verifier.verify`` on ``--verify`` tokens of each
   kind (keys from PEM files, as a JWKS's would be once fetched): microseconds
   per token.
2. A real ``clarion gateway`` process (fresh PostgreSQL database, Redis db 12):
   ``--connections`` connections opened per kind, 50 at a time, each waiting for
   its welcome, then closed: connections per second.

    .venv/bin/python bench/gateway_auth.py [--verify 2000] [--connections 1000]

Run by hand; it prints its figures. Nothing here is a timed unit test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import jwt
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clarion import migrate  # noqa: E402
from clarion.core.db import make_engine  # noqa: E402
from realtime.auth import Verifier  # noqa: E402
from realtime.jwks import load_pem_keys  # noqa: E402

ADMIN_URL = os.environ.get(
    "CLARION_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CLARION_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
SECRET = "bench-secret-0123456789-0123456789-abcdef"  # noqa: S105 - a local bench key
ISSUER, AUDIENCE = "https://idp.bench.example/", "clarion-gateway"
CLARION = str(Path(sys.executable).with_name("clarion"))


def tokens(kind: str, keys: dict[str, object], n: int) -> list[str]:
    made = []
    for _ in range(n):
        claims = {
            "sub": str(uuid.uuid4()),
            "iss": ISSUER,
            "aud": AUDIENCE,
            "exp": int(time.time() + 3600),
        }
        if kind == "HS256":
            made.append(jwt.encode(claims, SECRET, algorithm="HS256"))
        else:
            kid = "bench-rsa" if kind == "RS256" else "bench-ec"
            made.append(jwt.encode(claims, keys[kid], algorithm=kind, headers={"kid": kid}))
    return made


async def open_all(url: str, batch: list[str]) -> float:
    from websockets.asyncio.client import connect

    sem = asyncio.Semaphore(50)

    async def one(token: str) -> None:
        async with sem:
            ws = await connect(f"{url}?token={token}", compression=None, open_timeout=60)
            await ws.recv()  # welcome
            await ws.close()

    started = time.monotonic()
    await asyncio.gather(*(one(t) for t in batch))
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--verify", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=1000)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="clarion-bench-auth-"))
    private = {
        "bench-rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "bench-ec": ec.generate_private_key(ec.SECP256R1()),
    }
    files = []
    for kid, key in private.items():
        path = workdir / f"{kid}.pem"
        path.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        files.append(str(path))
    kinds = ("HS256", "RS256", "ES256")

    verifier = Verifier(
        secret=SECRET, pem_keys=load_pem_keys(files), issuer=ISSUER, audience=AUDIENCE
    )
    for kind in kinds:
        batch = tokens(kind, private, args.verify)

        async def verify_all(batch: list[str] = batch) -> float:
            started = time.perf_counter()
            for token in batch:
                await verifier.verify(token)
            return time.perf_counter() - started

        elapsed = asyncio.run(verify_all())
        print(f"verify {kind}: {elapsed / len(batch) * 1e6:.0f} us per token")

    name = f"clarion_bench_auth_{uuid.uuid4().hex[:8]}"
    admin = make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    gateway = None
    try:
        migrate.upgrade(url)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        env = {
            "CLARION_DATABASE_URL": url,
            "CLARION_REDIS_URL": REDIS_URL,
            "CLARION_JWT_SECRET": SECRET,
            "CLARION_JWT_PUBLIC_KEYS": ",".join(files),
            "CLARION_JWT_ISSUER": ISSUER,
            "CLARION_JWT_AUDIENCE": AUDIENCE,
            "CLARION_EVENTS_CHANNEL": f"clarion:bench:events:{uuid.uuid4().hex[:8]}",
            "CLARION_LOG_LEVEL": "WARNING",
        }
        gateway = subprocess.Popen(
            [CLARION, "gateway", "--port", str(port)],
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        assert gateway.stdout is not None
        line = gateway.stdout.readline().decode()
        assert "listening" in line, line
        for kind in kinds:
            batch = tokens(kind, private, args.connections)
            elapsed = asyncio.run(open_all(f"ws://127.0.0.1:{port}/", batch))
            print(
                f"connect {kind}: {len(batch)} connections in {elapsed:.2f} s "
                f"-> {len(batch) / elapsed:.0f}/s (open, welcome, close; 50 at a time)"
            )
    finally:
        if gateway is not None:
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
