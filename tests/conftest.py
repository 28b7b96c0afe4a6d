"""Shared fixtures: a real PostgreSQL database built by our migrations, a real Redis.

Each test session creates its own database (``clarion_test_<random>``) through
``CLARION_TEST_ADMIN_URL`` (default: the local ``postgres`` database), migrates
it with ``clarion.migrate.upgrade`` and drops it at the end. Tests that need a
clean slate use ``clean_db``; the seeded templates stay.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from clarion import migrate
from clarion.db import make_engine
from clarion.settings import Settings, reset_settings

ADMIN_URL = os.environ.get(
    "CLARION_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CLARION_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

DATA_TABLES = (
    "delivery_attempts",
    "notification_deliveries",
    "notifications",
    "user_addresses",
    "websocket_connections",
    "real_time_events",
)


def database_url(name: str) -> str:
    return sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def create_database(prefix: str = "clarion_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return database_url(name)


def drop_database(url: str) -> None:
    name = sa.make_url(url).database
    admin = make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


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
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {', '.join(DATA_TABLES)} CASCADE")
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
