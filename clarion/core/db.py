"""Engines and sessions: the one place that knows how Clarion connects.

URLs and engines are handed in by the entry points; nothing here reads the settings.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker


def normalize_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs given without a driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, **kwargs: Any) -> Engine:
    """A new engine for ``url`` (``Settings.effective_database_url`` at the entry points)."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        engine = sa.create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_recycle", 1800)
    if "poolclass" not in kwargs:  # NullPool and friends take no size arguments
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
    return sa.create_engine(url, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def get_engine(url: str) -> Engine:
    """The process's shared engine for ``url``."""
    return _shared_engine(normalize_url(url))


@functools.cache
def _shared_engine(url: str) -> Engine:
    return make_engine(url)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def is_postgres(bind: Engine | sa.Connection | Session) -> bool:
    return (
        bind.get_bind().dialect.name == "postgresql"
        if isinstance(bind, Session)
        else (bind.dialect.name == "postgresql")
    )


def is_transient_error(exc: BaseException) -> bool:
    """True for a database error worth retrying as is: a lost connection, a
    deadlock or serialization failure, the server going away."""
    if isinstance(exc, sa.exc.DBAPIError):
        return exc.connection_invalidated or isinstance(
            exc, sa.exc.OperationalError | sa.exc.InterfaceError
        )
    return False
