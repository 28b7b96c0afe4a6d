"""The farm's gauges read at scrape time (``clarion.metrics.FarmCollector``) on PostgreSQL
and Redis: the oldest due notification nobody claimed, queue depth, and a scrape that
survives a broker that does not answer."""

from __future__ import annotations

import datetime as dt
import socket
import uuid

import pytest
import redis
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Engine
from testdb import REDIS_URL

from clarion.core.db import session_factory
from clarion.metrics import FarmCollector

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def _insert(engine: Engine, *, created_ago: float, scheduled_in: float | None = None) -> None:
    now = dt.datetime.now(dt.UTC)
    scheduled = None if scheduled_in is None else now + dt.timedelta(seconds=scheduled_in)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO notifications (notification_id, user_id, notification_type,"
                " category, priority, title, message, delivery_channels, created_at,"
                " scheduled_at) VALUES (:id, :u, 'email', 'bid', 'normal', 't', 'm',"
                " '[\"email\"]', :c, :s)"
            ),
            {
                "id": uuid.uuid4(),
                "u": uuid.uuid4(),
                "c": now - dt.timedelta(seconds=created_ago),
                "s": scheduled,
            },
        )


def test_oldest_due_and_queue_depth(clean_db: Engine) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    registry = CollectorRegistry()
    registry.register(FarmCollector(session_factory(clean_db), REDIS_URL))
    sample = registry.get_sample_value

    assert sample("clarion_farm_up") == 1.0
    assert sample("clarion_oldest_due_seconds") == 0.0  # nothing waits
    _insert(clean_db, created_ago=90)
    _insert(clean_db, created_ago=30)
    _insert(clean_db, created_ago=600, scheduled_in=60)  # not due yet: does not count
    age = sample("clarion_oldest_due_seconds")
    assert age is not None and 89 <= age < 120
    # Dramatiq's Redis layout: ids in the queue list, dead letters in the XQ set.
    client.rpush("dramatiq:email", "a", "b")
    client.zadd("dramatiq:sms.XQ", {"x": 1})
    assert sample("clarion_queue_messages", {"queue": "email", "state": "ready"}) == 2.0
    assert sample("clarion_queue_messages", {"queue": "sms", "state": "dead"}) == 1.0
    assert sample("clarion_queue_messages", {"queue": "push", "state": "delayed"}) == 0.0
    assert sample("clarion_expired_leases") == 0.0
    client.flushdb()
    client.close()


def test_a_broker_that_does_not_answer_leaves_the_scrape_standing(clean_db: Engine) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    registry = CollectorRegistry()
    registry.register(FarmCollector(session_factory(clean_db), f"redis://127.0.0.1:{port}/0"))
    families = {f.name for f in registry.collect()}
    assert families == {"clarion_farm_up"}
    assert registry.get_sample_value("clarion_farm_up") == 0.0
