"""``GET /metrics`` of a real ``clarion web`` process: the notifications it created through
the application API and the farm's gauges, parsed with prometheus-client's parser. No
scheduler runs here, so the notification it created is due and unclaimed: the oldest-due
gauge counts its wait."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from testdb import REDIS_URL
from webkit import Web, start_web

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def web(pg_url: str, clean_db: object, tmp_path: Path) -> Iterator[Web]:
    server = start_web(
        {
            "CLARION_DATABASE_URL": pg_url,
            "CLARION_REDIS_URL": REDIS_URL,
            "CLARION_BROKER_URL": REDIS_URL,
        },
        tmp_path,
    )
    yield server
    assert server.stop() == 0, server.log()


def scrape(web: Web) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx.get(f"{web.url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_web_metrics_after_a_notification_created_over_http(web: Web) -> None:
    key = web.new_key("metrics", "send")
    made = httpx.post(
        f"{web.url}/v1/notifications",
        json={
            "user_id": str(uuid.uuid4()),
            "title": "You were outbid",
            "message": "Someone bid more on lot 7.",
            "category": "bid",
            "priority": "high",
            "channels": ["in_app"],
        },
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert made.status_code == 201, made.text
    time.sleep(1.2)
    found = scrape(web)
    created = ("clarion_notifications_created_total", frozenset({("priority", "high")}))
    assert found[created] == 1.0
    assert found[("clarion_farm_up", frozenset())] == 1.0
    assert found[("clarion_oldest_due_seconds", frozenset())] >= 1.0  # nobody claims it
    ready = ("clarion_queue_messages", frozenset({("queue", "in_app"), ("state", "ready")}))
    assert found[ready] == 0.0
    assert found[("process_resident_memory_bytes", frozenset())] > 0
    # Not part of the API's schema.
    schema = httpx.get(f"{web.url}/openapi.json", timeout=10).json()
    assert "/metrics" not in schema["paths"]
