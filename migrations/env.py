"""Alembic environment: migrates the database of ``CLARION_DATABASE_URL``.

``clarion db upgrade`` passes a connection or URL through the config's
attributes; plain ``alembic`` (``[tool.alembic]`` in pyproject.toml) uses the
settings. This is the migrations' entry point: the only place that reads the
settings. What a revision needs to decide (``platform_foreign_keys``, from
``CLARION_PLATFORM_FOREIGN_KEYS``) is handed to it through
``config.attributes``, unless the caller put it there already.
"""

from __future__ import annotations

from typing import Any

from alembic import context

import models
from clarion.core.db import make_engine, normalize_url
from clarion.core.settings import get_settings
from models.base import PLATFORM_TABLES

config = context.config
target_metadata = models.metadata


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    # The foreign keys to the platform's tables exist only where
    # CLARION_PLATFORM_FOREIGN_KEYS says so; the models do not declare them,
    # so the comparison leaves them out either way.
    if type_ == "foreign_key_constraint" and obj.referred_table.name in PLATFORM_TABLES:
        return False
    # The platform's own tables are not ours to compare.
    return not (type_ == "table" and name in PLATFORM_TABLES)


def run_migrations() -> None:
    handed_in = config.attributes.get("platform_foreign_keys") is not None
    if not handed_in:
        config.attributes["platform_foreign_keys"] = get_settings().platform_foreign_keys
    try:
        _connect_and_run()
    finally:
        if not handed_in:
            # A config used again later reads the settings of that later day.
            del config.attributes["platform_foreign_keys"]


def _connect_and_run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = (
        config.attributes.get("url")
        or config.get_main_option("sqlalchemy.url")
        or get_settings().effective_database_url
    )
    engine = make_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


def _run(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=include_object,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations()
