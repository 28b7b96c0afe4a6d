"""Fixtures of the operators' tests (helpers in ``operators_support``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Stack, clarion_env, reset_broker
from operators_support import BROKERS, REDIS_URL, Ops
from sqlalchemy.engine import Engine
from testdb import truncate_data

from channels.sandboxes.farm import SandboxFarm


@pytest.fixture(scope="session")
def farm() -> Iterator[SandboxFarm]:
    with SandboxFarm() as f:
        yield f


@pytest.fixture(scope="session")
def base_env(
    pg_url: str, farm: SandboxFarm, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    return clarion_env(
        tmp_path_factory.mktemp("aws"),
        {
            **farm.environment(),
            "CLARION_DATABASE_URL": pg_url,
            "CLARION_REDIS_URL": REDIS_URL,
            "CLARION_POLL_INTERVAL": "0.3",
            "CLARION_RETRY_MIN_BACKOFF": "0.2",
            "CLARION_RETRY_MAX_BACKOFF": "0.5",
            # These tests make dead letters out of a provider failing every request:
            # with the outage rule on, such failures would wait instead of dead-lettering.
            "CLARION_OUTAGE_THRESHOLD": "0",
            "CLARION_PROVIDER_TIMEOUT": "5",
            "CLARION_EMAIL_FROM": "notifications@clarion.test",
        },
    )


@pytest.fixture(params=sorted(BROKERS))
def broker(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def ops(engine: Engine, farm: SandboxFarm, base_env: dict[str, str], broker: str) -> Ops:
    truncate_data(engine)
    reset_broker(BROKERS[broker])
    farm.ses.reset()
    farm.twilio.reset()
    return Ops(engine, farm, {**base_env, "CLARION_BROKER_URL": BROKERS[broker]}, broker)


@pytest.fixture
def stack(ops: Ops, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(ops.env, tmp_path, f"ops-{ops.broker}", worker_threads=4)
    try:
        yield s
    finally:
        s.stop()
