"""Benchmark: a worker's 32 threads sharing one httpx client, by keep-alive pool size.

The webhook provider shares one ``httpx.Client`` among a worker process's
threads. With more threads than kept-alive connections, every request
beyond the pool's ``max_keepalive_connections`` closes its connection when
it is done and the next one opens a new one. Here ``--threads`` threads POST
through one client to the webhook sandbox (in a process of its own) for
``--seconds``, for each keep-alive size, alternated ``--rounds`` times.

    .venv/bin/python bench/http_pool.py --threads 32 --keepalive 20,100 --seconds 5
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from channels.sandboxes.webhook import WebhookReceiver  # noqa: E402


def serve(port: Any, stop: Any) -> None:
    with WebhookReceiver() as receiver:
        port.value = receiver.port
        stop.wait()


def run(url: str, threads: int, keepalive: int, seconds: float) -> float:
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=keepalive)
    client = httpx.Client(limits=limits, timeout=10)
    done = [0] * threads
    end = time.perf_counter() + seconds

    def work(i: int) -> None:
        while time.perf_counter() < end:
            client.post(url, json={"n": i}).raise_for_status()
            done[i] += 1

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    client.close()
    return sum(done) / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--keepalive", default="20,100")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    port = ctx.Value("i", 0)
    stop = ctx.Event()
    server = ctx.Process(target=serve, args=(port, stop))
    server.start()
    while port.value == 0:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port.value}/hook"
    try:
        for round_ in range(args.rounds):
            for keepalive in (int(k) for k in args.keepalive.split(",")):
                rate = run(url, args.threads, keepalive, args.seconds)
                print(
                    f"round {round_ + 1}: {args.threads} threads, keep-alive {keepalive:>3}:"
                    f" {rate:,.0f} requests/s",
                    flush=True,
                )
    finally:
        stop.set()
        server.join()


if __name__ == "__main__":
    main()
