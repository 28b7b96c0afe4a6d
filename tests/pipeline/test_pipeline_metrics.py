"""``/metrics`` of a real worker (two processes), scheduler and gateway after a real run.

The run: clean deliveries on all five channels, a high-priority one, an SES
503 retried away, a Twilio 429 waited out, an SES delivery that exhausts its
attempts (a dead letter), an invalid address; a WebSocket client connected to
a gateway receives the in-app notifications and a published event. Each
endpoint is then scraped over HTTP and parsed with prometheus-client's own
parser, and the numbers are checked against what the database and the broker
say happened, not only for being there.

The daemons get ``--host``/``--port`` on the command line while their
settings point somewhere unusable: they only start if the flags win.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa
from harness import CLARION, ROOT, wait_until
from prometheus_client.parser import text_string_to_metric_families
from rtkit import RT, Client, free_port, gateways_fixture, rt_fixture  # noqa: F401 - fixtures
from websockets.exceptions import InvalidStatus

from channels.sandboxes.http import Fault
from clarion import metrics as top_metrics
from realtime.outbox import publish_event

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(300)]

#: An address no test machine has (TEST-NET-1): binding it fails, so a daemon whose
#: settings point there starts only if its --host flag wins.
UNBINDABLE = "192.0.2.1"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """GET /metrics and parse it with prometheus-client's text parser."""
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``; KeyError if none."""
    wanted = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and wanted <= ls]
    if not found:
        raise KeyError(f"no sample {name} {labels}")
    return sum(found)


def by_labels(samples: Samples, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """``name``'s non-zero samples summed by the labels ``keys``."""
    out: dict[tuple[str, ...], float] = collections.defaultdict(float)
    for (n, ls), v in samples.items():
        if n == name and v:
            labels = dict(ls)
            out[tuple(labels[k] for k in keys)] += v
    return dict(out)


@pytest.fixture
def ports() -> Iterator[dict[str, int]]:
    yield {"worker": free_port(), "scheduler": free_port()}


def test_worker_scheduler_and_gateway_metrics_after_a_run(
    stacks: Any,
    pl: Any,
    sandboxes: Any,
    gateways: Any,
    rt: RT,
    redis_client: redis.Redis,
    ports: dict[str, int],
) -> None:
    stack = stacks(
        "metrics",
        CLARION_WORKER_METRICS_HOST=UNBINDABLE,
        CLARION_SCHEDULER_METRICS_HOST=UNBINDABLE,
        CLARION_WORKER_METRICS_PORT="1",
        CLARION_SCHEDULER_METRICS_PORT="1",
    )
    stack.worker(2, 4, "--host", "127.0.0.1", "--port", str(ports["worker"]))
    stack.scheduler("--host", "127.0.0.1", "--port", str(ports["scheduler"]))
    stack.wait_ready()
    # The in-app channel publishes on the worker's Redis; the gateway listens there.
    gateway = gateways(CLARION_REDIS_URL=stack.env["CLARION_REDIS_URL"])
    rt.use(gateway)
    created_before = _created_here()

    user = pl.user(email=True, sms=True, push=True, webhook=True)
    all_channels = ["email", "sms", "push", "webhook", "in_app"]

    async def scenario() -> tuple[list[dict[str, Any]], Samples]:
        with pytest.raises(InvalidStatus):  # a forged token: refused before the upgrade
            await Client.open(gateway.url, "not-a-token")
        client = await Client.open(gateway.url, RT.token(user.user_id))
        await client.subscribe(topics=["bid"])
        created = [
            (await asyncio.to_thread(pl.notify, user, all_channels), 5),
            (await asyncio.to_thread(pl.notify, user, all_channels), 5),
            (await asyncio.to_thread(pl.notify, user, ["email", "in_app"], priority="high"), 2),
        ]
        for notification_id, channels in created:
            await asyncio.to_thread(pl.wait_final, notification_id, channels, timeout=30)
        event = await asyncio.to_thread(
            publish_event, "bid_placed", event_data={"bid_amount": 10.0}, visibility="public"
        )
        frames = []
        while True:
            frame = await client.recv()
            frames.append(frame)
            if frame.get("type") == "event" and frame["event_id"] == str(event.event_id):
                break
        # Scraped while the client is still connected.
        gateway_samples = await asyncio.to_thread(scrape, gateway.port)
        await client.close()
        return frames, gateway_samples

    frames, gw = asyncio.run(scenario())
    in_app_frames = [f for f in frames if f.get("type") == "notification"]
    assert len(in_app_frames) == 3

    # Faults, one at a time: nothing else is in flight.
    sandboxes.ses.fail(Fault(status=503))
    pl.wait_final(pl.notify(user, ["email"]), 1, timeout=30)
    sandboxes.twilio.fail(Fault(status=429, retry_after=1))
    pl.wait_final(pl.notify(user, ["sms"]), 1, timeout=30)
    sandboxes.ses.fail(Fault(status=503), times=2)
    exhausted_id = pl.notify(user, ["email"], max_attempts=2)
    _, exhausted = pl.wait_final(exhausted_id, 1, timeout=30)
    assert exhausted["email"].dead_lettered_at is not None
    bad = pl.user(email="bidder-at-example.com")
    pl.wait_final(pl.notify(bad, ["email"]), 1, timeout=30)
    notifications = 3 + 4

    # notify() counts in the process that calls it: this one.
    assert _created_here() - created_before == notifications

    # --- the worker: two processes, one endpoint, every number as the database has it
    truth = _attempts_by_channel_provider_outcome(pl)
    expected_attempts = {k: float(v) for k, v in truth.items()}
    w = wait_until(
        lambda: _when(
            scrape(ports["worker"]),
            lambda s: by_labels(s, "clarion_dead_letters_total", "queue") == {("email",): 1.0},
        ),
        timeout=10,
        what="the dead letter to be counted",
    )
    assert (
        by_labels(w, "clarion_provider_requests_total", "channel", "provider", "outcome")
        == expected_attempts
    )
    latency_counts = by_labels(
        w, "clarion_provider_request_duration_seconds_count", "channel", "provider"
    )
    per_provider: dict[tuple[str, ...], float] = collections.defaultdict(float)
    for (channel, provider, _outcome), count in expected_attempts.items():
        per_provider[(channel, provider)] += count
    assert latency_counts == dict(per_provider)
    assert value(w, "clarion_provider_request_duration_seconds_sum") > 0
    outcomes = by_labels(w, "clarion_deliveries_total", "channel", "outcome")
    assert outcomes == {
        ("email", "sent"): 4.0,  # 2 clean, 1 high, 1 after its retry
        ("email", "retry"): 2.0,  # the 503 retried away, the first 503 of the exhausted one
        ("email", "exhausted"): 1.0,
        ("email", "failed"): 1.0,  # the invalid address
        ("sms", "sent"): 3.0,
        ("sms", "retry"): 1.0,  # the 429
        ("push", "sent"): 2.0,
        ("webhook", "delivered"): 2.0,
        ("in_app", "delivered"): 3.0,
    }
    assert by_labels(w, "clarion_delivery_retries_total", "channel", "reason") == {
        ("email", "retryable"): 2.0,
        ("sms", "throttled"): 1.0,
    }
    assert by_labels(w, "clarion_dead_letters_total", "channel", "queue") == {
        ("email", "email"): float(redis_client.zcard("dramatiq:email.XQ"))
    }

    # --- the scheduler: claims, batches, enqueues, and the farm read at scrape time
    s = scrape(ports["scheduler"])
    assert by_labels(s, "clarion_notifications_claimed_total", "priority") == {
        ("normal",): notifications - 1.0,
        ("high",): 1.0,
    }
    assert value(s, "clarion_scheduler_claim_batch_size_sum") == notifications
    assert 1 <= value(s, "clarion_scheduler_claim_batch_size_count") <= notifications
    assert value(s, "clarion_scheduler_claim_duration_seconds_count") >= 1
    enqueued = by_labels(s, "clarion_deliveries_enqueued_total", "queue")
    assert sum(enqueued.values()) == _count(pl, "SELECT count(*) FROM notification_deliveries")
    assert enqueued[("email_urgent",)] == 1.0
    assert enqueued[("in_app_urgent",)] == 1.0
    assert value(s, "clarion_farm_up") == 1.0
    assert value(s, "clarion_queue_messages", queue="email", state="dead") == 1.0
    assert value(s, "clarion_queue_messages", queue="email", state="ready") == 0.0
    assert value(s, "clarion_oldest_due_seconds") == 0.0  # everything was claimed
    assert value(s, "clarion_expired_leases") == 0.0
    assert value(s, "clarion_live_workers") >= 1.0
    assert value(s, "clarion_scheduler_held_messages") == 0.0
    assert value(s, "clarion_scheduler_dependency_down", dependency="database") == 0.0
    assert value(s, "process_cpu_seconds_total") > 0

    # --- the gateway, scraped while the client was connected
    assert value(gw, "clarion_gateway_connections", authenticated="true") == 1.0
    assert value(gw, "clarion_gateway_connections_opened_total") >= 1.0
    assert value(gw, "clarion_gateway_subscriptions", kind="topic") == 1.0
    assert value(gw, "clarion_gateway_subscription_keys", kind="topic") == 1.0
    assert value(gw, "clarion_gateway_events_total", result="dispatched") >= 1.0
    assert value(gw, "clarion_gateway_event_frames_total", send="first") >= 1.0
    assert value(gw, "clarion_gateway_fanout_seconds_count") >= 1.0
    assert value(gw, "clarion_gateway_event_lag_seconds_count") >= 1.0
    assert value(gw, "clarion_gateway_notification_frames_total") == 3.0
    assert value(gw, "clarion_gateway_redis_receiving") == 1.0
    assert value(gw, "clarion_gateway_refusals_total", kind="token") == 1.0
    assert value(gw, "clarion_gateway_refusals_total", kind="origin") == 0.0

    # Only /metrics is served beside the upgrade and /healthz.
    assert httpx.get(f"http://127.0.0.1:{ports['worker']}/nope", timeout=5).status_code == 404


def _when(samples: Samples, check: Any) -> Samples | None:
    try:
        return samples if check(samples) else None
    except KeyError:
        return None


def _created_here() -> float:
    """clarion_notifications_created_total of this process (notify() runs here)."""
    return sum(
        sample.value
        for family in top_metrics.REGISTRY.collect()
        for sample in family.samples
        if sample.name == "clarion_notifications_created_total"
    )


def _count(pl: Any, sql: str) -> float:
    with pl.engine.connect() as conn:
        return float(conn.execute(sa.text(sql)).scalar_one())


def _attempts_by_channel_provider_outcome(pl: Any) -> dict[tuple[str, str, str], int]:
    with pl.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT d.channel::text, a.provider, a.outcome::text, count(*)"
                " FROM delivery_attempts a JOIN notification_deliveries d USING (delivery_id)"
                " GROUP BY 1, 2, 3"
            )
        ).all()
    return {(r[0], r[1], r[2]): int(r[3]) for r in rows}


# --- the flags and their errors ----------------------------------------------------------


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLARION, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    return done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("daemon", ["worker", "scheduler"])
def test_a_port_in_use_stops_the_daemon_naming_the_flag_or_the_variable(
    daemon: str, pipeline_env: dict[str, str]
) -> None:
    variable = f"CLARION_{daemon.upper()}_METRICS_PORT"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        by_flag = _run([daemon, "--port", port], pipeline_env)
        assert by_flag.returncode == 2, by_flag.stderr
        assert _last_line(by_flag).startswith(f"clarion: --port: cannot listen on 127.0.0.1:{port}")
        assert "Traceback" not in by_flag.stderr
        by_setting = _run([daemon], {**pipeline_env, variable: port})
        assert by_setting.returncode == 3, by_setting.stderr
        assert f"bad setting {variable}: cannot listen on 127.0.0.1:{port}" in by_setting.stderr
    bad_host = _run([daemon, "--host", UNBINDABLE, "--port", port], pipeline_env)
    assert bad_host.returncode == 2, bad_host.stderr
    assert _last_line(bad_host).startswith(f"clarion: --host: cannot listen on {UNBINDABLE}:{port}")
    bad_port = _run([daemon, "--port", "70000"], pipeline_env)
    assert bad_port.returncode == 2
    assert "--port: must be a TCP port" in bad_port.stderr
    bad_variable = _run([daemon], {**pipeline_env, variable: "http"})
    assert bad_variable.returncode == 3
    assert f"bad setting {variable}" in bad_variable.stderr


def test_a_worker_cleans_up_its_samples_directory(
    stacks: Any, pl: Any, ports: dict[str, int], tmp_path: Any
) -> None:
    # Left by a worker that was killed (its pid is gone): the next run removes it.
    orphan = tmp_path / f"clarion-worker-metrics-{_dead_pid()}-x1y2"
    orphan.mkdir()
    (orphan / "counter_1.db").write_bytes(b"")
    stack = stacks("cleanup", TMPDIR=str(tmp_path))
    stack.worker(1, 2, "--port", str(ports["worker"]))
    stack.scheduler()
    stack.wait_ready()
    user = pl.user(webhook=True)
    pl.wait_final(pl.notify(user, ["webhook"]), 1, timeout=30)
    [directory] = list(tmp_path.glob("clarion-worker-metrics-*"))
    assert directory != orphan
    assert any(directory.glob("counter_*.db"))
    w = scrape(ports["worker"])
    assert value(w, "clarion_deliveries_total", channel="webhook", outcome="delivered") == 1.0
    codes = stack.stop()
    assert codes == {"worker0": 0, "scheduler0": 0}
    assert not directory.exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{ports['worker']}/metrics", timeout=2)


def _dead_pid() -> int:
    """The pid of a process that has exited."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid
