"""The ASGI app ``clarion web`` mounts at ``/metrics`` (``clarion.metrics.asgi_app``),
called the way an ASGI server calls it: the notifications this process created and
the farm's gauges, parsed back with prometheus-client's parser."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import MutableMapping
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from clarion.api import notify
from clarion.core.settings import Settings
from clarion.metrics import asgi_app

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def get(app: Any) -> tuple[int, dict[str, str], str]:
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/metrics",
        "query_string": b"",
        "headers": [(b"accept", b"text/plain")],
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return int(start["status"]), headers, body.decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def created(found: dict[tuple[str, frozenset[tuple[str, str]]], float], priority: str) -> float:
    return found.get(
        ("clarion_notifications_created_total", frozenset({("priority", priority)})), 0.0
    )


def test_the_web_metrics_app(settings: Settings, session: Session, engine: Engine) -> None:
    app = asgi_app(settings, engine=engine)
    before = created(samples(get(app)[2]), "urgent")
    key, user = f"idem-{uuid.uuid4()}", uuid.uuid4()
    for _ in range(2):  # the idempotent repeat is not a second notification
        notify(
            user,
            title="Lot 7 closes",
            message="Two minutes left.",
            category="auction",
            priority="urgent",
            channels=["in_app"],
            idempotency_key=key,
            session=session,
        )
    session.commit()
    status, headers, text = get(app)
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    found = samples(text)
    assert created(found, "urgent") - before == 1.0
    assert found[("clarion_farm_up", frozenset())] == 1.0
    assert found[("clarion_oldest_due_seconds", frozenset())] >= 0.0
    assert ("clarion_queue_messages", frozenset({("queue", "in_app"), ("state", "ready")})) in found
    assert found[("process_cpu_seconds_total", frozenset())] > 0

    # Without the farm (left to the scheduler): only what this process knows.
    names = {name for name, _ in samples(get(asgi_app(settings, farm=False))[2])}
    assert "clarion_notifications_created_total" in names
    assert "clarion_farm_up" not in names
