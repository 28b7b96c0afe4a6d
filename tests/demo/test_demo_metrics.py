"""After ``clarion demo`` (whose worker and scheduler have stopped), ``clarion web``'s
``/metrics`` shows what the farm did: read from PostgreSQL and the broker at the scrape,
parsed with prometheus-client's parser and checked against the database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from testdb import create_database, drop_database
from webkit import start_web, web_env

from clarion.core.db import make_engine

DEMO_REDIS = os.environ.get("CLARION_TEST_DEMO_REDIS_URL", "redis://127.0.0.1:6379/11")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def demo_db() -> Iterator[str]:
    url = create_database("clarion_demo_metrics")
    yield url
    drop_database(url)


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def family(found: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (n, labels), value in found.items() if n == name}


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(180)
def test_metrics_after_a_demo_run_show_what_the_farm_did(tmp_path: Path, demo_db: str) -> None:
    redis.Redis.from_url(DEMO_REDIS).flushdb()
    settings = {
        "CLARION_DATABASE_URL": demo_db,
        "CLARION_BROKER_URL": DEMO_REDIS,
        "CLARION_REDIS_URL": DEMO_REDIS,
    }
    done = subprocess.run(
        [sys.executable, "-m", "clarion", "demo"],
        cwd=tmp_path,
        env=web_env(settings),
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dead-letter queue: 1 message(s)" in done.stdout, done.stdout[-3000:]

    web = start_web(settings, tmp_path)
    try:
        response = httpx.get(f"{web.url}/metrics", timeout=30)
    finally:
        assert web.stop() == 0, web.log()
    assert response.status_code == 200, response.text
    found: Samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(response.text)
        for s in f.samples
    }

    engine = make_engine(demo_db)
    with engine.connect() as c:
        notifications = dict(
            c.execute(sa.text("SELECT status, count(*) FROM notifications GROUP BY 1")).all()
        )
        deliveries = {
            (ch, prov or "none", st): n
            for ch, prov, st, n in c.execute(
                sa.text(
                    "SELECT channel, provider, status, count(*) FROM notification_deliveries"
                    " GROUP BY 1, 2, 3"
                )
            )
        }
        attempts = {
            (ch, prov, out): n
            for ch, prov, out, n in c.execute(
                sa.text(
                    "SELECT channel, provider, outcome, count(*) FROM delivery_attempts"
                    " GROUP BY 1, 2, 3"
                )
            )
        }
    engine.dispose()

    assert found[key("clarion_records_up")] == 1.0
    assert found[key("clarion_farm_up")] == 1.0

    # Notifications by status: the database's counts, and the demo's outcomes are there.
    shown = family(found, "clarion_notifications")
    assert {dict(k)["status"]: v for k, v in shown.items() if v} == notifications
    assert shown[frozenset({("status", "delivered")})] >= 6
    assert shown[frozenset({("status", "failed")})] >= 1  # the dead-lettered webhook
    assert shown[frozenset({("status", "cancelled")})] >= 2  # outbids folded by the policy
    assert shown[frozenset({("status", "pending")})] == 0

    # Deliveries by channel, provider and status: every channel delivered something.
    shown = family(found, "clarion_delivery_records")
    as_rows = {
        (dict(k)["channel"], dict(k)["provider"], dict(k)["status"]): v for k, v in shown.items()
    }
    assert as_rows == deliveries
    for channel in ("email", "sms", "push", "in_app", "webhook"):
        assert any(
            ch == channel and st in ("sent", "delivered") and v > 0
            for (ch, _p, st), v in as_rows.items()
        ), (channel, as_rows)

    # Provider calls by outcome: the SMS 503 was retried, bob's push token is dead,
    # dave's webhook failed each attempt.
    shown = family(found, "clarion_attempt_records")
    calls = {
        (dict(k)["channel"], dict(k)["provider"], dict(k)["outcome"]): v for k, v in shown.items()
    }
    assert calls == attempts
    outcomes = {(ch, out) for (ch, _p, out), v in calls.items() if v > 0}
    assert {("sms", "retryable"), ("push", "bad_address"), ("webhook", "retryable")} <= outcomes
    assert ("sms", "delivered") in outcomes or ("sms", "sent") in outcomes

    # The dead letter, in both views: PostgreSQL's and the broker's.
    assert found[key("clarion_dead_lettered_deliveries", channel="webhook")] == 1.0
    dead = {
        dict(k)["queue"]: v
        for k, v in family(found, "clarion_queue_messages").items()
        if dict(k)["state"] == "dead" and v
    }
    assert sum(dead.values()) == 1.0, dead
    # Nothing is left waiting once the demo is over.
    assert found[key("clarion_oldest_due_seconds")] == 0.0
