"""The records' counts of ``clarion web``'s ``/metrics`` (``clarion.metrics.RecordsCollector``)
on PostgreSQL: counted at most once per interval, and a scrape that survives a database
that does not answer."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Engine

from clarion.core.db import make_engine, session_factory
from clarion.metrics import RecordsCollector

pytestmark = [pytest.mark.postgres]


def _insert(engine: Engine, status: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO notifications (notification_id, user_id, notification_type,"
                " category, priority, title, message, delivery_channels, status, created_at)"
                " VALUES (:id, :u, 'email', 'bid', 'normal', 't', 'm', '[\"email\"]',"
                " CAST(:st AS notification_status), :c)"
            ),
            {"id": uuid.uuid4(), "u": uuid.uuid4(), "st": status, "c": dt.datetime.now(dt.UTC)},
        )


def test_counted_at_most_once_per_interval(clean_db: Engine) -> None:
    fresh, cached = CollectorRegistry(), CollectorRegistry()
    fresh.register(RecordsCollector(session_factory(clean_db), interval=0))
    cached.register(RecordsCollector(session_factory(clean_db), interval=3600))

    def delivered(registry: CollectorRegistry) -> float | None:
        return registry.get_sample_value("clarion_notifications", {"status": "delivered"})

    assert delivered(fresh) == 0.0 and delivered(cached) == 0.0
    _insert(clean_db, "delivered")
    _insert(clean_db, "delivered")
    _insert(clean_db, "failed")
    assert delivered(fresh) == 2.0
    assert fresh.get_sample_value("clarion_notifications", {"status": "failed"}) == 1.0
    assert delivered(cached) == 0.0  # the last counts, until the interval is over
    assert cached.get_sample_value("clarion_records_up") == 1.0


def test_a_database_that_does_not_answer_leaves_the_scrape_standing() -> None:
    engine = make_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/nowhere", connect_args={"connect_timeout": 2}
    )
    registry = CollectorRegistry()
    registry.register(RecordsCollector(session_factory(engine)))
    assert registry.get_sample_value("clarion_records_up") == 0.0
    assert registry.get_sample_value("clarion_notifications", {"status": "delivered"}) is None
    engine.dispose()
