"""Benchmark: end-to-end throughput and latency against a bare no-op Dramatiq drain.

For each broker, in ONE run (ratios are what compare across runs):

1. bare: N messages to a no-op actor (``bench/noop_actor.py``) drained by
   ``dramatiq --processes P --threads T`` on the same broker, before and after
   the Clarion runs (the ratio uses their mean);
2. for each channel (``in_app``: a Redis PUBLISH; ``webhook``: a POST to the
   webhook sandbox in a process of its own, answering after each provider
   latency given): N notifications (bulk INSERT) claimed by ``clarion
   scheduler`` and delivered by ``clarion worker --processes P --threads T``;
   deliveries/s from the first write-back to the last (the processes' start-up
   left out, as for the bare drain; the JSON also has the rate from the start),
   and the largest resident size of a worker process meanwhile;
3. latency at low load: notifications created one at a time with
   ``clarion.notify``, creation -> provider acceptance (``delivered_at -
   created_at`` of the delivery row);
4. latency at half load: notifications created at half the rate measured in
   2. for ``--load-seconds``, creation -> provider acceptance.

    python -m bench throughput [-n 10000] [--broker redis,rabbitmq] \\
        [--channel in_app,webhook] [--provider-latency-ms 0,200] \\
        [--json PATH] [--chart PATH] [--latency-chart PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import statistics
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
from bench.rss import PeakRSS  # noqa: E402

CHANNELS = ("in_app", "webhook")
DELIVERED = sa.text(
    "SELECT count(*) FROM notification_deliveries d JOIN notifications n USING (notification_id)"
    " WHERE n.title = :title AND d.status = 'delivered'"
)
LATENCIES = sa.text(
    "SELECT extract(epoch FROM d.delivered_at - n.created_at) FROM notification_deliveries d"
    " JOIN notifications n USING (notification_id) WHERE n.title = :title"
    " AND d.status = 'delivered' ORDER BY 1"
)
# Recipients: a pool of USERS users, ids md5('<seed>-<i>') (the same in SQL and Python),
# about ten notifications each as at an auction's end; one user for everything would
# put every delivery behind the per-user rate limit and its one counter row.
USERS = sa.text(
    "INSERT INTO user_addresses (user_id, channel, address)"
    " SELECT CAST(md5(:seed || '-' || g) AS uuid), 'webhook', :a"
    " FROM generate_series(0, :users - 1) AS g"
)
SPAN = sa.text(
    "SELECT extract(epoch FROM max(d.delivered_at) - min(d.delivered_at)) FROM"
    " notification_deliveries d JOIN notifications n USING (notification_id)"
    " WHERE n.title = :title"
)
INSERT = sa.text(
    "INSERT INTO notifications (user_id, notification_type, category, priority, title, message,"
    " delivery_channels) SELECT CAST(md5(:seed || '-' || ((g + :offset) % :users)) AS uuid),"
    " CAST(:channel AS notification_channel), 'bid', 'normal', CAST(:title AS text),"
    " CAST(:title AS text) || ' message ' || g,"
    " jsonb_build_array(CAST(:channel AS text)) FROM generate_series(1, :k) AS g"
)


def pool_user(seed: str, i: int) -> uuid.UUID:
    """User ``i`` of the recipients' pool ``seed`` (see USERS)."""
    return uuid.UUID(hashlib.md5(f"{seed}-{i}".encode()).hexdigest())  # noqa: S324 - an id, not a secret


def csv(kind: type, choices: tuple[str, ...] | None = None) -> Any:
    """An argparse type: a comma-separated list of ``kind``, checked against ``choices``."""

    def parse(text: str) -> list[Any]:
        try:
            values = [kind(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
        bad = [v for v in values if choices is not None and v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected a comma-separated list of {', '.join(choices or ('numbers',))}"
            )
        return values

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench throughput",
        description="End-to-end deliveries/s and latency, against a bare Dramatiq no-op drain"
        " on the same broker in the same run.",
    )
    p.add_argument("-n", type=int, default=10000, help="notifications per run (default 10000)")
    p.add_argument("--broker", type=csv(str, common.BROKERS), default=["redis"])
    p.add_argument("--channel", type=csv(str, CHANNELS), default=["in_app"])
    p.add_argument(
        "--provider-latency-ms",
        type=csv(float),
        default=[0.0],
        help="webhook receiver's answer delay(s), e.g. 0,200 (in-app runs once, at 0)",
    )
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=32)
    p.add_argument("--probes", type=int, default=50, help="low-load probes, one at a time")
    p.add_argument("--load-seconds", type=float, default=20.0, help="half-load phase length")
    p.add_argument("--json", type=Path, help="default bench/results/throughput-<time>.json")
    p.add_argument("--chart", type=Path, help="PNG: deliveries/s against provider latency")
    p.add_argument("--latency-chart", type=Path, help="PNG: latency distribution (CDF)")
    p.add_argument("--replot", type=Path, help="only draw the charts of an earlier run's JSON")
    return p


# --- the bare no-op drain -----------------------------------------------------------


def bare(broker: str, n: int, processes: int, threads: int) -> float:
    """Messages/s of ``dramatiq noop_actor`` draining ``n`` queued no-op messages."""
    url = common.broker_url(broker)
    common.reset_broker(url)
    counter = redis.Redis.from_url(common.REDIS_URL)
    counter.delete("bench:noop:done")
    env = {
        **os.environ,
        "CLARION_BROKER_URL": url,
        "CLARION_BENCH_REDIS_URL": common.REDIS_URL,
        "PYTHONPATH": str(ROOT / "bench"),
    }
    # Enqueue from a child process: the actor module binds its broker when imported.
    subprocess.run(
        [sys.executable, "-c", f"import noop_actor\nfor i in range({n}): noop_actor.noop.send(i)"],
        env=env,
        cwd=ROOT / "bench",
        check=True,
    )
    start = time.perf_counter()
    dramatiq = Path(sys.executable).parent / "dramatiq"
    procs = [
        subprocess.Popen(
            [str(dramatiq), "noop_actor", "--processes", str(processes), "--threads", str(threads)],
            env=env,
            cwd=ROOT / "bench",
            stderr=subprocess.DEVNULL,
        )
    ]
    first: float | None = None
    try:
        while (done := int(counter.get("bench:noop:done") or 0)) < n:
            if first is None and done:
                first = time.perf_counter()
            if procs[0].poll() is not None:
                raise SystemExit(f"bare dramatiq exited ({procs[0].returncode})")
            time.sleep(0.005)
        # From the first message done to the last: the processes' start-up (seconds
        # on a loaded machine) is left out, as it is for Clarion.
        return n / (time.perf_counter() - (first or start))
    finally:
        common.stop(procs)
        counter.close()


# --- the webhook receiver, in a process of its own ------------------------------------


def serve_webhook(latency_s: float, port: Any, stop: Any) -> None:
    """Run the webhook sandbox answering after ``latency_s`` until ``stop`` is set."""
    from channels.sandboxes.webhook import WebhookReceiver

    with WebhookReceiver(latency=latency_s) as receiver:
        # socketserver listens with a backlog of 5: a worker's 64 threads connecting
        # at once would see resets, retried seconds later, and measure the backlog.
        receiver._server.socket.listen(1024)
        port.value = receiver.port
        stop.wait()


class Receiver:
    """The webhook sandbox in a spawned process (its threads off this process's GIL)."""

    def __init__(self, latency_s: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._port = ctx.Value("i", 0)
        self._stop = ctx.Event()
        self._proc = ctx.Process(target=serve_webhook, args=(latency_s, self._port, self._stop))

    def __enter__(self) -> str:
        self._proc.start()
        deadline = time.time() + 30
        while self._port.value == 0:
            if time.time() > deadline or not self._proc.is_alive():
                raise SystemExit("the webhook sandbox did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self._port.value}/hooks/bench"

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()


# --- one Clarion run ----------------------------------------------------------------


def probe_latencies(
    engine: sa.Engine, pool: tuple[str, int], channel: str, probes: int
) -> list[float]:
    """Creation -> acceptance of ``probes`` notifications created one at a time."""
    import clarion as api

    q = sa.text(
        "SELECT extract(epoch FROM d.delivered_at - n.created_at) FROM notification_deliveries d"
        " JOIN notifications n USING (notification_id) WHERE d.notification_id = :id"
        " AND d.status = 'delivered'"
    )
    out: list[float] = []
    for i in range(probes):
        user = pool_user(pool[0], i % pool[1])
        note = api.notify(user, title="Probe", message="probe", category="bid", channels=[channel])
        deadline = time.time() + 30
        with engine.connect() as conn:
            while time.time() < deadline:
                value = conn.execute(q, {"id": note.notification_id}).scalar()
                conn.rollback()
                if value is not None:
                    out.append(float(value))
                    break
                time.sleep(0.005)
        time.sleep(0.05)
    return out


def steady_load(
    engine: sa.Engine,
    pool: tuple[str, int],
    channel: str,
    *,
    rate: float,
    seconds: float,
    procs: list[subprocess.Popen[bytes]],
) -> tuple[float, list[float]]:
    """Create notifications at ``rate``/s for ``seconds`` (an INSERT every 50 ms);
    returns the achieved rate and every creation -> acceptance latency."""
    tick = 0.05
    per_tick = max(1, round(rate * tick))
    start = time.perf_counter()
    sent = 0
    next_tick = start
    while time.perf_counter() - start < seconds:
        with engine.begin() as conn:
            conn.execute(
                INSERT,
                {
                    "seed": pool[0],
                    "users": pool[1],
                    "offset": sent,
                    "channel": channel,
                    "title": "Load",
                    "k": per_tick,
                },
            )
        sent += per_tick
        next_tick += tick
        time.sleep(max(0.0, next_tick - time.perf_counter()))
    achieved = sent / (time.perf_counter() - start)
    common.wait_for(engine, DELIVERED, sent, params={"title": "Load"}, timeout=300, procs=procs)
    with engine.connect() as conn:
        values = [float(v) for v in conn.execute(LATENCIES, {"title": "Load"}).scalars()]
    return achieved, values


def clarion_run(broker: str, channel: str, latency_ms: float, args: argparse.Namespace) -> dict:
    """One end-to-end run on a fresh database; its figures as a dict."""
    from clarion.core.db import make_engine
    from clarion.core.settings import Settings, reset_settings

    receiver = Receiver(latency_ms / 1000) if channel == "webhook" else None
    with common.scratch_database() as url:
        common.reset_broker(common.broker_url(broker))
        engine = make_engine(url)
        pool = (uuid.uuid4().hex, max(1, args.n // 10))
        hook = receiver.__enter__() if receiver else None
        procs: list[subprocess.Popen[bytes]] = []
        try:
            with engine.begin() as conn:
                if hook:
                    conn.execute(USERS, {"seed": pool[0], "users": pool[1], "a": hook})
                conn.execute(
                    INSERT,
                    {
                        "seed": pool[0],
                        "users": pool[1],
                        "offset": 0,
                        "channel": channel,
                        "title": "Bench",
                        "k": args.n,
                    },
                )
            procs = common.start_clarion(
                common.clarion_env(url, broker), args.processes, args.threads
            )
            with PeakRSS(procs[-1].pid) as rss:
                elapsed = common.wait_for(
                    engine, DELIVERED, args.n, params={"title": "Bench"}, procs=procs
                )
            with engine.connect() as conn:
                span = conn.execute(SPAN, {"title": "Bench"}).scalar_one()
            # Deliveries/s from the first to the last write-back, start-up left out.
            rate = args.n / max(float(span), 1e-3)
            reset_settings(
                Settings.from_env(
                    {"CLARION_DATABASE_URL": url, "CLARION_REDIS_URL": common.REDIS_URL}
                )
            )
            low = probe_latencies(engine, pool, channel, args.probes)
            half_rate, half = steady_load(
                engine, pool, channel, rate=rate / 2, seconds=args.load_seconds, procs=procs
            )
        finally:
            common.stop(procs)
            reset_settings(None)
            if receiver:
                receiver.__exit__()
            engine.dispose()
    return {
        "broker": broker,
        "channel": channel,
        "latency_ms": latency_ms,
        "n": args.n,
        "seconds_from_start": elapsed,
        "rate_from_start": args.n / elapsed,
        "rate": rate,
        "worker_max_rss_mb": rss.max_process / 2**20,
        "worker_tree_rss_mb": rss.max_total / 2**20,
        "low_load": {"count": len(low), "p50": _p(low, 0.5), "p99": _p(low, 0.99), "values": low},
        "half_load": {
            "rate": half_rate,
            "count": len(half),
            "p50": _p(half, 0.5),
            "p99": _p(half, 0.99),
            "values": half,
        },
        "load_average": list(common.load_average()),
    }


def _p(values: list[float], q: float) -> float | None:
    return report.percentile(values, q)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def charts(data: dict[str, Any], chart: Path, latency_chart: Path) -> None:
    """Draw both charts from a run's JSON data."""
    args, runs = data["args"], data["runs"]
    for r in runs:
        r.setdefault("thread_cap", args["processes"] * args["threads"])
    title = f"{args['n']:,} notifications, worker {args['processes']} x {args['threads']}"
    print(f"chart: {report.throughput_chart(chart, runs, f'Throughput ({title})')}")
    series: dict[str, list[float]] = {}
    for r in runs:
        label = f"{r['channel']} {r['latency_ms']:g} ms, {r['broker']}"
        series[f"{label}, low load"] = r["low_load"]["values"]
        series[f"{label}, half load"] = r["half_load"]["values"]
    drawn = report.latency_chart(latency_chart, series, "Creation -> acceptance")
    print(f"latency chart: {drawn}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.replot:
        data = json.loads(args.replot.read_text())
        charts(
            data,
            args.chart or args.replot.with_suffix(".png"),
            args.latency_chart or args.replot.with_name(args.replot.stem + "-latency.png"),
        )
        return 0
    if args.n < 1:
        raise SystemExit("-n: at least one notification")
    runs: list[dict] = []
    bares: dict[str, list[float]] = {}
    for broker in args.broker:
        bares[broker] = [bare(broker, args.n, args.processes, args.threads)]
        print(f"bare no-op, {broker}: {bares[broker][0]:,.0f}/s", flush=True)
        for channel in args.channel:
            latencies = args.provider_latency_ms if channel == "webhook" else [0.0]
            for latency_ms in latencies:
                run = clarion_run(broker, channel, latency_ms, args)
                print(
                    f"clarion {channel}, {broker}, provider {latency_ms:g} ms:"
                    f" {run['rate']:,.0f}/s, worker RSS max {run['worker_max_rss_mb']:.0f} MB,"
                    f" load average {run['load_average'][0]:.1f}",
                    flush=True,
                )
                runs.append(run)
        bares[broker].append(bare(broker, args.n, args.processes, args.threads))
        print(f"bare no-op again, {broker}: {bares[broker][1]:,.0f}/s", flush=True)
    for run in runs:
        run["bare_rates"] = bares[run["broker"]]
        run["bare_rate"] = statistics.fmean(bares[run["broker"]])
        run["ratio"] = run["rate"] / run["bare_rate"]
    rows = [
        (
            r["broker"],
            r["channel"],
            f"{r['latency_ms']:g}",
            r["bare_rate"],
            r["rate"],
            f"{r['ratio']:.2f}",
            f"{_ms(r['low_load']['p50'])} / {_ms(r['low_load']['p99'])}",
            r["half_load"]["rate"],
            f"{_ms(r['half_load']['p50'])} / {_ms(r['half_load']['p99'])}",
            f"{r['worker_max_rss_mb']:.0f}",
            f"{r['load_average'][0]:.1f}",
        )
        for r in runs
    ]
    print()
    print(
        f"{args.n:,} notifications, worker {args.processes} x {args.threads} threads"
        " (latencies: creation -> provider acceptance, ms)"
    )
    print(
        report.table(
            [
                "broker",
                "channel",
                "provider ms",
                "bare no-op/s",
                "Clarion/s",
                "ratio",
                "low load p50 / p99",
                "half load/s",
                "half load p50 / p99",
                "worker RSS MB",
                "load avg",
            ],
            rows,
        )
    )
    path = report.write_json(
        args.json or report.default_json("throughput"),
        {"benchmark": "throughput", "args": vars(args), "bare": bares, "runs": runs},
    )
    print(f"\nJSON: {path}")
    data = json.loads(path.read_text())
    charts(
        data,
        args.chart or path.with_suffix(".png"),
        args.latency_chart or path.with_name(path.stem + "-latency.png"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
