"""The worker's Dramatiq middleware counts dead letters where Dramatiq makes them and
unexpected errors, never an intended Retry or an exhausted delivery (StubBroker)."""

from __future__ import annotations

from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from prometheus_client import CollectorRegistry

from workers.broker import middleware
from workers.metrics import WorkerMetrics


class Exhausted(Exception):
    pass


@pytest.fixture
def setup() -> Iterator[tuple[StubBroker, WorkerMetrics, dict[str, dramatiq.Actor]]]:  # type: ignore[type-arg]
    broker = StubBroker(middleware=middleware())
    metrics = WorkerMetrics(CollectorRegistry())
    broker.add_middleware(metrics)
    calls = {"retry": 0}

    def bug() -> None:
        raise ValueError("a bug")

    def exhausted() -> None:
        raise Exhausted

    def waits() -> None:
        calls["retry"] += 1
        raise dramatiq.Retry(delay=1)

    actors = {
        "email": dramatiq.actor(
            bug, actor_name="bug", queue_name="email", broker=broker, retry_when=lambda n, e: False
        ),
        "sms_urgent": dramatiq.actor(
            exhausted,
            actor_name="exhausted",
            queue_name="sms_urgent",
            broker=broker,
            throws=(Exhausted,),
        ),
        "webhook": dramatiq.actor(
            waits,
            actor_name="waits",
            queue_name="webhook",
            broker=broker,
            retry_when=lambda n, e: n < 2,
        ),
    }
    worker = dramatiq.Worker(broker, worker_timeout=50)
    worker.start()
    yield broker, metrics, actors
    worker.stop()
    broker.close()


def test_dead_letters_and_unexpected_errors(
    setup: tuple[StubBroker, WorkerMetrics, dict[str, dramatiq.Actor]],  # type: ignore[type-arg]
) -> None:
    broker, metrics, actors = setup
    for actor in actors.values():
        actor.send()
    for queue in actors:
        broker.join(queue, timeout=10_000, fail_fast=False)
    sample = metrics.registry.get_sample_value
    # One dead letter per queue: the bug after its (refused) retry, the exhausted
    # delivery at once, the one that kept asking for a Retry once retry_when said no.
    for channel, queue in (("email", "email"), ("sms", "sms_urgent"), ("webhook", "webhook")):
        assert sample("clarion_dead_letters_total", {"channel": channel, "queue": queue}) == 1.0
    # Only the bug is an unexpected error.
    assert sample("clarion_worker_errors_total", {"queue": "email", "error": "ValueError"}) == 1.0
    errors = [
        s
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == "clarion_worker_errors_total"
    ]
    assert len(errors) == 1
