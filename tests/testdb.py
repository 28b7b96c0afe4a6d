"""Scratch PostgreSQL databases for the tests, by a name no other test module shadows.

(A bare ``from conftest import ...`` resolves to whichever ``conftest.py`` was
imported first under that name: tests/pipeline has one of its own.)
"""

from __future__ import annotations

import os
import uuid

import sqlalchemy as sa

from clarion.core.db import make_engine

ADMIN_URL = os.environ.get(
    "CLARION_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CLARION_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

DATA_TABLES = (
    "delivery_attempts",
    "notification_deliveries",
    "notifications",
    "user_addresses",
    "user_locales",
    "websocket_connections",
    "real_time_events",
    "api_keys",
    "idempotency_keys",
    "user_opt_outs",
    "user_quiet_hours",
    "collapse_windows",
    "rate_counters",
    "suppressions",
    "email_unsubscribes",
    "receipt_counts",
    "status_callbacks",
)


def truncate_data(engine: sa.Engine) -> None:
    """Empty every data table (the seeded templates stay)."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {', '.join(DATA_TABLES)} CASCADE")


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
