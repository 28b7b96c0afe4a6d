"""Shared fixtures: a real PostgreSQL database built by our migrations, a real Redis.

Each test session creates its own database (``clarion_test_<random>``) through
``CLARION_TEST_ADMIN_URL`` (default: the local ``postgres`` database), migrates
it with ``clarion.migrate.upgrade`` and drops it at the end. Tests that need a
clean slate use ``clean_db``; the seeded templates stay.

A failed test's report carries the logs of the Clarion processes it left
running (``harness.Stack``), whichever tier started them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from browserkit import chromium  # noqa: F401  (the browser tests' fixture, for every tier)
from harness import Stack
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from testdb import REDIS_URL, create_database, drop_database, truncate_data

from clarion import migrate
from clarion.core.db import make_engine
from clarion.core.settings import Settings, reset_settings


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        for stack in Stack.active:
            report.sections.append((f"clarion processes ({stack.name})", stack.logs()))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a migrated, empty PostgreSQL database for this test session."""
    url = create_database()
    migrate.upgrade(url)
    yield url
    drop_database(url)


@pytest.fixture(scope="session")
def engine(pg_url: str) -> Iterator[Engine]:
    eng = make_engine(pg_url)
    yield eng
    eng.dispose()


@pytest.fixture
def clean_db(engine: Engine) -> Engine:
    truncate_data(engine)
    return engine


@pytest.fixture
def session(clean_db: Engine) -> Iterator[Session]:
    with sessionmaker(clean_db, expire_on_commit=False)() as s:
        yield s


@pytest.fixture
def settings(pg_url: str) -> Iterator[Settings]:
    """Process settings pointing at the test database and test Redis."""
    current = Settings.from_env(
        {
            "CLARION_DATABASE_URL": pg_url,
            "CLARION_BROKER_URL": REDIS_URL,
            "CLARION_REDIS_URL": REDIS_URL,
            "CLARION_WEBHOOK_ALLOW_PRIVATE": "true",
        }
    )
    reset_settings(current)
    yield current
    reset_settings(None)
