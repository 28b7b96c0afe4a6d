"""Benchmark: the gateway's fan-out against bare ``websockets``, idle connections, memory.

For each ``--processes`` value P and each ``--subscribers`` value S, in one run:

1. **gateway**: a real ``clarion gateway --processes P`` (fresh PostgreSQL
   database, Redis db 12, compression off) and ``--clients`` client processes
   opening S connections that subscribe to one auction; ``--events`` events
   published with ``clarion.publish_event`` every ``--interval`` seconds.
2. **bare**: a bare ``websockets`` server (one process, same library, same
   settings: compression off) with S connections from the same client code,
   ``broadcast()``-ing the gateway's own event frame, pre-encoded, the same
   number of times at the same interval: the floor of what a Python
   WebSocket server pays to put one frame on one socket.

Reported per (P, S):

* gateway CPU per delivered frame (user + system time of every gateway
  process, from ``/proc/<pid>/stat``, from the first publish until every
  client holds every frame, divided by the deliveries), the bare server's
  the same way, and their ratio;
* gateway-side latency per event: from the publish to Redis to the last
  socket write of that event in any gateway process (the gateway's own
  record, ``CLARION_GATEWAY_FANOUT_LOG``), p50 / p99 / max over the events;
  and its parts: the hop through Redis (publish to the slowest process's
  read) and each process's dispatch (read to last write), the dispatch split
  into time on a CPU and time runnable but waiting for one (the process's
  ``/proc/thread-self/schedstat``): on a machine whose cores the clients
  share, the dispatch mostly waits;
* end-to-end latency: from just before ``publish_event()`` to the client's
  receipt, p50 / p99 / max over every (event, subscriber);
* the client processes' CPU over the same window (they share the machine);
* memory per connection: the gateway processes' RSS with S subscribed idle
  connections minus their RSS before the first one, per connection.

``--client-sched batch`` runs the client processes (of both runs) under
``SCHED_BATCH``: the same CPU share, but a client woken by a frame does not
preempt the server that wrote it, as clients on other machines would not.
Report figures both ways.

Then ``--idle`` idle connections per gateway process (``--idle-processes``
processes; the clients bind 127.0.0.2... so that loopback's ephemeral ports
suffice): RSS per connection and the rows ``connected``.

Figures go to stdout, to ``--json`` and, as a chart, to ``--chart``
(matplotlib, PNG). Run by hand on a quiet machine; nothing here is a timed test.

    .venv/bin/python bench/realtime_gateway.py --processes 1,2 --subscribers 1000,5000,10000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
TICKS = os.sysconf("SC_CLK_TCK")


# --- /proc -------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def family(pid: int) -> list[int]:
    """``pid`` and its children (the processes of ``clarion gateway --processes N``)."""
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(int(k) for k in kids)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def quantiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    if len(values) == 1:
        return {"p50": values[0], "p99": values[0], "max": values[0]}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": q[49], "p99": q[98], "max": values[-1]}


# --- client processes ----------------------------------------------------------------------


def client_process(
    url: str,
    count: int,
    auction: str | None,
    source_ip: str,
    pipe: Any,
    batch: bool = False,
) -> None:
    """Open ``count`` connections (subscribed to ``auction`` if given: the gateway); on
    ``("read", n)`` read ``n`` frames on each and report receipt latencies and own CPU."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    if batch:
        # SCHED_BATCH: the same share of the CPU as before, but a client woken by a frame
        # no longer preempts the process that wrote it (as clients on other machines would
        # not); a choice of the run, reported with its figures.
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def main() -> None:
        sockets: list[Any] = []
        sem = asyncio.Semaphore(25)  # handshakes in flight per client process

        async def open_one() -> None:
            async with sem:
                ws = await connect(
                    f"{url}?token={make_token(uuid.uuid4(), SECRET)}",
                    compression=None,
                    open_timeout=120,
                    ping_interval=None,
                    max_queue=None,
                    local_addr=(source_ip, 0),
                )
                if auction is not None:
                    await ws.recv()  # welcome
                    await ws.send(json.dumps({"type": "subscribe", "auctions": [auction]}))
                    await ws.recv()  # subscribed
                sockets.append(ws)

        await asyncio.gather(*(open_one() for _ in range(count)))
        pipe.send(("ready", len(sockets)))
        while True:
            command = await asyncio.to_thread(pipe.recv)
            if command[0] == "close":
                break
            frames = command[1]
            latencies: list[float] = []
            cpu0 = time.process_time()

            lost = 0

            async def read(ws: Any, frames: int, latencies: list[float]) -> None:
                nonlocal lost
                try:
                    for _ in range(frames):
                        frame = json.loads(await ws.recv())
                        latencies.append(time.time() - frame["data"]["t0"])
                except ConnectionClosed:
                    # Closed by the server (a keepalive timeout when this process fell
                    # seconds behind): counted, and the run goes on without it.
                    lost += 1

            await asyncio.gather(*(read(ws, frames, latencies) for ws in sockets))
            pipe.send(("done", time.time(), time.process_time() - cpu0, latencies, lost))
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

    asyncio.run(main())


class Clients:
    """``n`` client processes sharing ``total`` connections."""

    def __init__(
        self, url: str, total: int, n: int, auction: str | None, batch: bool = False
    ) -> None:
        self.procs: list[tuple[mp.Process, Any]] = []
        ctx = mp.get_context("spawn")
        per, extra = divmod(total, n)
        for i in range(n):
            parent, child = ctx.Pipe()
            count = per + (1 if i < extra else 0)
            p = ctx.Process(
                target=client_process,
                args=(url, count, auction, f"127.0.0.{2 + i}", child, batch),
            )
            p.start()
            self.procs.append((p, parent))
        self.opened = sum(parent.recv()[1] for _, parent in self.procs)

    def start_reading(self, frames: int) -> None:
        for _, parent in self.procs:
            parent.send(("read", frames))

    def results(self) -> tuple[float, float, list[float], int]:
        """(last receipt time, the clients' CPU seconds, every receipt latency, connections
        closed by the server while reading)."""
        last, cpu, latencies, lost = 0.0, 0.0, [], 0
        for _, parent in self.procs:
            _kind, done_at, used, values, closed = parent.recv()
            last = max(last, done_at)
            cpu += used
            latencies.extend(values)
            lost += closed
        return last, cpu, latencies, lost

    def close(self) -> None:
        for p, parent in self.procs:
            if p.is_alive():
                with contextlib.suppress(OSError):
                    parent.send(("close",))
        for p, _ in self.procs:
            p.join(60)
            if p.is_alive():
                p.kill()


# --- the bare websockets server ----------------------------------------------------------------


def bare_server(port: int, pipe: Any) -> None:
    """A bare websockets server: on ``("broadcast", frame, n, interval)`` broadcast the
    pre-encoded ``frame`` ``n`` times to every connection."""
    from websockets.asyncio.server import broadcast, serve

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    conns: set[Any] = set()

    async def handler(ws: Any) -> None:
        conns.add(ws)
        try:
            await ws.wait_closed()
        finally:
            conns.discard(ws)

    async def main() -> None:
        async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=None):
            pipe.send(("listening",))
            while True:
                command = await asyncio.to_thread(pipe.recv)
                if command[0] == "stop":
                    return
                if command[0] == "count":
                    pipe.send(("count", len(conns)))
                    continue
                _, frame, n, interval = command
                for _ in range(n):
                    broadcast(conns, frame, text=True)
                    await asyncio.sleep(interval)

    asyncio.run(main())


# --- the runs ------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.name = f"clarion_bench_rt_{uuid.uuid4().hex[:8]}"
        self.admin = make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
        with self.admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{self.name}"')
        self.url = (
            sa.make_url(ADMIN_URL).set(database=self.name).render_as_string(hide_password=False)
        )
        migrate.upgrade(self.url)
        self.engine = make_engine(self.url)
        self.fanout_log = Path(f"/tmp/{self.name}-fanout.jsonl")  # noqa: S108 - a bench file

    def close(self) -> None:
        self.engine.dispose()
        with self.admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.admin.dispose()
        self.fanout_log.unlink(missing_ok=True)

    def start_gateway(self, processes: int) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        env = {
            "CLARION_DATABASE_URL": self.url,
            "CLARION_REDIS_URL": REDIS_URL,
            "CLARION_JWT_SECRET": SECRET,
            "CLARION_GATEWAY_PORT": str(port),
            "CLARION_EVENTS_CHANNEL": f"clarion:bench:events:{uuid.uuid4().hex[:8]}",
            "CLARION_LOG_LEVEL": "WARNING",
            "CLARION_GATEWAY_FANOUT_LOG": str(self.fanout_log),
        }
        reset_settings(Settings.from_env(env))
        gateway = subprocess.Popen(
            [CLARION, "gateway", "--processes", str(processes)],
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        assert gateway.stdout is not None
        line = gateway.stdout.readline().decode()
        assert "listening" in line, line
        time.sleep(1.5)  # every process subscribed to Redis
        return gateway, port

    @staticmethod
    def stop_gateway(gateway: subprocess.Popen[bytes]) -> None:
        gateway.send_signal(signal.SIGTERM)
        try:
            gateway.wait(120)
        except subprocess.TimeoutExpired:
            gateway.kill()
            gateway.wait()

    def fanout(self, processes: int, subscribers: int) -> dict[str, Any]:
        from clarion import publish_event

        a = self.args
        gateway, port = self.start_gateway(processes)
        clients: Clients | None = None
        try:
            pids = family(gateway.pid)
            base = sum(rss_kib(p) for p in pids)
            auction = str(uuid.uuid4())
            clients = Clients(
                f"ws://127.0.0.1:{port}/",
                subscribers,
                a.clients,
                auction,
                a.client_sched == "batch",
            )
            time.sleep(6.0)  # the connection rows' batched writes and one counter flush
            rss = sum(rss_kib(p) for p in pids)
            self.fanout_log.write_text("")
            clients.start_reading(a.events)
            cpu0 = sum(cpu_seconds(p) for p in pids)
            t_start = time.time()
            event_ids: dict[str, float] = {}
            frame = ""
            for _ in range(a.events):
                t0 = time.time()
                row = publish_event(
                    "bid_placed",
                    auction_id=auction,
                    visibility="public",
                    event_data={"t0": t0, "bid_amount": 150.0},
                )
                event_ids[str(row.event_id)] = t0
                time.sleep(a.interval)
            last, client_cpu, latencies, lost = clients.results()
            cpu = sum(cpu_seconds(p) for p in pids) - cpu0
            window = last - t_start
            load = os.getloadavg()[0]
            time.sleep(0.5)
            records = [json.loads(line) for line in self.fanout_log.read_text().splitlines()]
            by_event: dict[str, list[dict[str, Any]]] = {}
            for r in records:
                by_event.setdefault(r["event_id"], []).append(r)
            gateway_side = [
                max(r["last_write_at"] for r in rs) - rs[0]["published_at"]
                for e, rs in by_event.items()
                if e in event_ids and rs[0]["published_at"] is not None
            ]
            # Where the gateway-side time goes: the hop through Redis (publish to the
            # slowest process's read) and the dispatch (that read to the last write).
            receive = [
                max(r["received_at"] for r in rs) - rs[0]["published_at"]
                for e, rs in by_event.items()
                if e in event_ids and rs[0]["published_at"] is not None
            ]
            dispatch = [
                r["last_write_at"] - r["received_at"] for r in records if r["event_id"] in event_ids
            ]
            # ... and what the dispatch's wall time is made of: CPU, and waiting for one.
            dispatch_cpu = [
                r["dispatch_cpu"]
                for r in records
                if r["event_id"] in event_ids and r.get("dispatch_cpu") is not None
            ]
            dispatch_runqueue = [
                r["dispatch_runqueue"]
                for r in records
                if r["event_id"] in event_ids and r.get("dispatch_runqueue") is not None
            ]
            direct = sum(r["direct"] for r in records)
            queued = sum(r["queued"] for r in records)
            from realtime.visibility import client_frame

            frame = json.dumps(
                client_frame(
                    {
                        "seq": 1,
                        "event_id": str(uuid.uuid4()),
                        "event_type": "bid_placed",
                        "category": "bid",
                        "priority": "normal",
                        "visibility": "public",
                        "auction_id": auction,
                        "channels": ["bid"],
                        "generated_at": "2026-12-02T05:00:00.000000+00:00",
                        "data": {"t0": time.time(), "bid_amount": 150.0},
                    }
                ),
                separators=(",", ":"),
            )
            deliveries = len(latencies)
            return {
                "processes": processes,
                "subscribers": subscribers,
                "opened": clients.opened,
                "events": a.events,
                "deliveries": deliveries,
                "connections_lost": lost,
                "direct": direct,
                "queued": queued,
                "gateway_cpu_s": cpu,
                "gateway_cpu_us_per_frame": cpu / deliveries * 1e6,
                # The rest of the gateway's CPU: watchdog, flushes, Redis, relay.
                "dispatch_cpu_s": sum(dispatch_cpu),
                "client_cpu_s": client_cpu,
                "window_s": window,
                "load_average_1m": load,
                "client_sched": a.client_sched,
                "gateway_side_ms": {k: v * 1000 for k, v in quantiles(gateway_side).items()},
                "receive_ms": {k: v * 1000 for k, v in quantiles(receive).items()},
                "dispatch_ms": {k: v * 1000 for k, v in quantiles(dispatch).items()},
                "dispatch_cpu_ms": {
                    k: v * 1000 for k, v in quantiles(dispatch_cpu or [0.0]).items()
                },
                "dispatch_runqueue_ms": {
                    k: v * 1000 for k, v in quantiles(dispatch_runqueue or [0.0]).items()
                },
                "end_to_end_ms": {k: v * 1000 for k, v in quantiles(latencies).items()},
                "kib_per_connection": (rss - base) / max(clients.opened, 1),
                "frame": frame,
            }
        finally:
            if clients is not None:
                clients.close()
            self.stop_gateway(gateway)

    def bare(self, subscribers: int, frame: str) -> dict[str, Any]:
        a = self.args
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        port = free_port()
        server = ctx.Process(target=bare_server, args=(port, child))
        server.start()
        clients: Clients | None = None
        try:
            assert parent.recv()[0] == "listening"
            clients = Clients(
                f"ws://127.0.0.1:{port}/", subscribers, a.clients, None, a.client_sched == "batch"
            )
            time.sleep(2.0)
            assert server.pid is not None
            clients.start_reading(a.events)
            cpu0 = cpu_seconds(server.pid)
            t_start = time.time()
            parent.send(("broadcast", frame.encode(), a.events, a.interval))
            last, client_cpu, _latencies, _lost = clients.results()
            cpu = cpu_seconds(server.pid) - cpu0
            deliveries = subscribers * a.events
            return {
                "subscribers": subscribers,
                "deliveries": deliveries,
                "bare_cpu_s": cpu,
                "bare_cpu_us_per_frame": cpu / deliveries * 1e6,
                "bare_client_cpu_s": client_cpu,
                "bare_window_s": last - t_start,
            }
        finally:
            if clients is not None:
                clients.close()
            parent.send(("stop",))
            server.join(30)
            if server.is_alive():
                server.kill()

    def idle(self, per_process: int, processes: int) -> dict[str, Any]:
        a = self.args
        gateway, port = self.start_gateway(processes)
        clients: Clients | None = None
        try:
            pids = family(gateway.pid)
            base = {p: rss_kib(p) for p in pids}
            total = per_process * processes
            started = time.monotonic()
            clients = Clients(f"ws://127.0.0.1:{port}/", total, a.clients, None)
            opened_in = time.monotonic() - started
            time.sleep(8.0)
            after = {p: rss_kib(p) for p in pids}
            with self.engine.connect() as c:
                rows = c.execute(
                    sa.text(
                        "SELECT count(*) FROM websocket_connections "
                        "WHERE connection_status = 'connected'"
                    )
                ).scalar_one()
            growth = sum(after.values()) - sum(base.values())
            return {
                "processes": processes,
                "connections": clients.opened,
                "rows_connected": int(rows),
                "opened_in_s": opened_in,
                "rss_mib_before": {str(p): v / 1024 for p, v in base.items()},
                "rss_mib_after": {str(p): v / 1024 for p, v in after.items()},
                "kib_per_connection": growth / max(clients.opened, 1),
            }
        finally:
            if clients is not None:
                clients.close()
            self.stop_gateway(gateway)
            with self.engine.begin() as c:
                c.execute(sa.text("DELETE FROM websocket_connections"))


def chart(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split = all("dispatch_cpu_ms" in r for r in results)
    fig, axes = plt.subplots(1, 3 if split else 2, figsize=(18 if split else 12, 4.5))
    cpu_ax, lat_ax = axes[0], axes[1]
    labels = [f"{r['subscribers']:,} subs\n{r['processes']} proc" for r in results]
    xs = range(len(results))
    w = 0.38
    cpu_ax.bar(
        [x - w / 2 for x in xs],
        [r["gateway_cpu_us_per_frame"] for r in results],
        w,
        label="gateway",
    )
    cpu_ax.bar(
        [x + w / 2 for x in xs],
        [r["bare_cpu_us_per_frame"] for r in results],
        w,
        label="bare websockets broadcast()",
    )
    for x, r in zip(xs, results, strict=True):
        cpu_ax.annotate(
            f"{r['ratio']:.2f}x",
            (x - w / 2, r["gateway_cpu_us_per_frame"]),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    cpu_ax.set_xticks(list(xs), labels, fontsize=8)
    cpu_ax.set_ylabel("server CPU per delivered frame (µs)")
    cpu_ax.set_title("Fan-out cost against the websockets floor")
    cpu_ax.legend(fontsize=8)
    lat_ax.bar(
        [x - w / 2 for x in xs],
        [r["gateway_side_ms"]["p99"] for r in results],
        w,
        label="gateway side p99 (publish -> last socket write)",
    )
    lat_ax.bar(
        [x + w / 2 for x in xs],
        [r["end_to_end_ms"]["p99"] for r in results],
        w,
        label="end to end p99 (clients on the same 2 cores)",
    )
    lat_ax.set_xticks(list(xs), labels, fontsize=8)
    lat_ax.set_ylabel("ms (log scale)")
    lat_ax.set_yscale("log")
    lat_ax.set_title("One event to every subscriber of an auction")
    lat_ax.legend(fontsize=8)
    if split:
        # What one process's dispatch of one event is made of (p50): on a CPU, waiting for one.
        split_ax = axes[2]
        on_cpu = [r["dispatch_cpu_ms"]["p50"] for r in results]
        waiting = [r["dispatch_runqueue_ms"]["p50"] for r in results]
        split_ax.bar(list(xs), on_cpu, 0.6, label="on a CPU")
        split_ax.bar(list(xs), waiting, 0.6, bottom=on_cpu, label="runnable, waiting for a CPU")
        for x, r in zip(xs, results, strict=True):
            split_ax.annotate(
                f"load {r['load_average_1m']:.0f}",
                (x, r["dispatch_cpu_ms"]["p50"] + r["dispatch_runqueue_ms"]["p50"]),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        split_ax.set_xticks(list(xs), labels, fontsize=8)
        split_ax.set_ylabel("ms per process and event (p50)")
        split_ax.set_title("Where a dispatch's time goes")
        split_ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", default="1,2", help="gateway processes, comma-separated")
    parser.add_argument("--subscribers", default="1000,5000,10000")
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between events")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument(
        "--client-sched",
        choices=("normal", "batch"),
        default="normal",
        help="scheduling policy of the client processes (gateway and bare runs alike): "
        "batch (SCHED_BATCH) keeps their CPU share but stops a client woken by a frame "
        "from preempting the server that wrote it",
    )
    parser.add_argument("--idle", type=int, default=19_000, help="idle connections per process")
    parser.add_argument("--idle-processes", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--chart", type=Path, default=ROOT / "docs" / "bench" / "realtime.png")
    parser.add_argument(
        "--replot",
        type=Path,
        default=None,
        help="draw --chart from the --json of an earlier run, measuring nothing",
    )
    args = parser.parse_args()
    if args.replot is not None:
        chart(json.loads(args.replot.read_text())["fanout"], args.chart)
        print(f"chart: {args.chart}")
        return 0
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"open files limit (per process): {hard}; client scheduling: {args.client_sched}")

    bench = Bench(args)
    results: list[dict[str, Any]] = []
    idle: dict[str, Any] | None = None
    try:
        for processes in [int(p) for p in args.processes.split(",") if p]:
            for subscribers in [int(s) for s in args.subscribers.split(",") if s]:
                r = bench.fanout(processes, subscribers)
                r.update(bench.bare(subscribers, r.pop("frame")))
                floor = r["bare_cpu_us_per_frame"]
                r["ratio"] = r["gateway_cpu_us_per_frame"] / floor if floor else float("nan")
                results.append(r)
                g, e = r["gateway_side_ms"], r["end_to_end_ms"]
                print(
                    f"P={processes} S={subscribers:>6,}: {r['deliveries']:,} deliveries "
                    f"(direct {r['direct']:,}, queued {r['queued']:,}, connections closed "
                    f"by the gateway while reading {r['connections_lost']}); gateway CPU "
                    f"{r['gateway_cpu_us_per_frame']:.1f} us/frame, bare "
                    f"{r['bare_cpu_us_per_frame']:.1f} us/frame, ratio {r['ratio']:.2f}; "
                    f"gateway-side p50/p99/max {g['p50']:.0f}/{g['p99']:.0f}/{g['max']:.0f} ms; "
                    f"(Redis hop p50/p99 {r['receive_ms']['p50']:.0f}/"
                    f"{r['receive_ms']['p99']:.0f} ms, dispatch per process p50/p99 "
                    f"{r['dispatch_ms']['p50']:.0f}/{r['dispatch_ms']['p99']:.0f} ms, of which "
                    f"on CPU {r['dispatch_cpu_ms']['p50']:.0f}/{r['dispatch_cpu_ms']['p99']:.0f}"
                    f" ms, waiting for a CPU {r['dispatch_runqueue_ms']['p50']:.0f}/"
                    f"{r['dispatch_runqueue_ms']['p99']:.0f} ms); "
                    f"end to end p50/p99/max {e['p50']:.0f}/{e['p99']:.0f}/{e['max']:.0f} ms; "
                    f"client CPU {r['client_cpu_s']:.2f} s "
                    f"(bare run {r['bare_client_cpu_s']:.2f} s); "
                    f"gateway {r['gateway_cpu_s']:.2f} s (dispatches "
                    f"{r['dispatch_cpu_s']:.2f} s) over {r['window_s']:.1f} s; "
                    f"{r['kib_per_connection']:.1f} KiB/conn; "
                    f"load average {r['load_average_1m']:.1f}",
                    flush=True,
                )
        if args.idle:
            idle = bench.idle(args.idle, args.idle_processes)
            print(
                f"idle: {json.dumps(idle)}",
                flush=True,
            )
            print(
                f"idle: {idle['connections']:,} connections over {idle['processes']} process(es) "
                f"({idle['rows_connected']:,} rows connected), opened in "
                f"{idle['opened_in_s']:.1f} s, RSS MiB before {idle['rss_mib_before']} after "
                f"{idle['rss_mib_after']} -> {idle['kib_per_connection']:.1f} KiB per connection",
                flush=True,
            )
    finally:
        bench.close()
        # Whatever was measured is kept, even if a later phase failed.
        if args.json:
            args.json.write_text(json.dumps({"fanout": results, "idle": idle}, indent=2))
        if results and args.chart:
            chart(results, args.chart)
            print(f"chart: {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
