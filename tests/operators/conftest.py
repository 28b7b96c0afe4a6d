"""Fixtures of the operators' tests (helpers in ``operators_support``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from operators_support import BROKERS, REDIS_URL, Ops, Stack, clean, reset_broker
from sqlalchemy.engine import Engine

from channels.sandboxes.farm import SandboxFarm


@pytest.fixture(scope="session")
def farm() -> Iterator[SandboxFarm]:
    with SandboxFarm() as f:
        yield f


@pytest.fixture(scope="session")
def base_env(
    pg_url: str, farm: SandboxFarm, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    aws = tmp_path_factory.mktemp("aws")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CLARION_", "AWS_", "TWILIO_", "GOOGLE_"))
    }
    env.update(farm.environment())
    env.update(
        {
            "AWS_CONFIG_FILE": str(aws / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(aws / "credentials"),
            "PYTHONUNBUFFERED": "1",
            "CLARION_DATABASE_URL": pg_url,
            "CLARION_REDIS_URL": REDIS_URL,
            "CLARION_POLL_INTERVAL": "0.3",
            "CLARION_RETRY_MIN_BACKOFF": "0.2",
            "CLARION_RETRY_MAX_BACKOFF": "0.5",
            "CLARION_PROVIDER_TIMEOUT": "5",
            "CLARION_EMAIL_FROM": "notifications@clarion.test",
        }
    )
    return env


@pytest.fixture(params=sorted(BROKERS))
def broker(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def ops(engine: Engine, farm: SandboxFarm, base_env: dict[str, str], broker: str) -> Ops:
    clean(engine)
    reset_broker(BROKERS[broker])
    farm.ses.reset()
    farm.twilio.reset()
    return Ops(engine, farm, {**base_env, "CLARION_BROKER_URL": BROKERS[broker]}, broker)


@pytest.fixture
def stack(ops: Ops, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(ops.env, tmp_path)
    try:
        yield s
    finally:
        s.stop()
