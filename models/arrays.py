"""Many rows in one statement on PostgreSQL: the parameters as arrays, ``unnest`` on the server.

``executemany`` of an UPDATE or INSERT is one statement per row: PostgreSQL
parses, plans and executes each, and the driver binds each row's values one
by one. On the workers' hot path (a write-back of a batch of deliveries:
their rows, their attempts, their notifications) that per-row overhead was
most of the database's CPU. Here a batch is one statement whatever its size,
with one array parameter per column (``UPDATE ... FROM unnest(...)``,
``INSERT ... SELECT * FROM unnest(...)``).

The column types come from the declared tables (compiled for PostgreSQL), so
the statements follow the models. Enum members are sent as their values and
JSON documents as ``jsonb``. Other databases (the embedded SQLite default)
keep ``executemany``: the callers choose with :func:`supported`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from psycopg.types.json import Jsonb
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

__all__ = ["insert_rows", "supported", "update_rows"]

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


def supported(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _array_type(column: sa.Column[Any]) -> str:
    kind = column.type
    if isinstance(kind, sa.String) and not isinstance(kind, sa.Enum):
        # Not VARCHAR(n)[]: an explicit cast to varchar(n) cuts a longer
        # value silently, where the column's own assignment refuses it.
        return "TEXT[]"
    return f"{kind.compile(dialect=_PG)}[]"


def _is_json(column: sa.Column[Any]) -> bool:
    return isinstance(column.type.dialect_impl(_PG), sa.JSON)


def _values(column: sa.Column[Any], rows: Sequence[Mapping[str, Any]], key: str) -> list[Any]:
    json = _is_json(column)
    out: list[Any] = []
    for row in rows:
        value = row[key]
        if value is None:
            out.append(None)
        elif json:
            out.append(Jsonb(value))
        elif isinstance(value, enum.Enum):
            out.append(value.value)
        else:
            out.append(value)
    return out


def _unnest(table: sa.Table, names: Sequence[str], alias: str) -> str:
    args = ", ".join(f"CAST(%(a_{name})s AS {_array_type(table.c[name])})" for name in names)
    return f"unnest({args}) AS {alias}({', '.join(names)})"


def update_rows(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    match: Sequence[str],
    assign: Sequence[str],
    raw: Mapping[str, str] | None = None,
) -> int:
    """``UPDATE table SET assign... FROM unnest(rows) WHERE match...``; returns the row count.

    Each row maps every name of ``match`` and ``assign`` (column names) to its
    value. ``raw`` adds assignments written in SQL over the target ``t`` and
    the row ``v`` (``{"take_token": "NULL"}``); its names that are also row
    keys are passed in the arrays too.
    """
    if not rows:
        return 0
    raw = dict(raw or {})
    passed = [
        *match,
        *assign,
        *[k for k in raw if k not in match and k not in assign and k in rows[0]],
    ]
    params = {f"a_{name}": _values(table.c[name], rows, name) for name in passed}
    sets = [f"{name} = v.{name}" for name in assign] + [f"{k} = {v}" for k, v in raw.items()]
    where = " AND ".join(f"t.{name} = v.{name}" for name in match)
    sql = (
        f"UPDATE {table.name} AS t SET {', '.join(sets)} "
        f"FROM {_unnest(table, passed, 'v')} WHERE {where}"
    )
    return int(conn.exec_driver_sql(sql, params).rowcount)


def insert_rows(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """``INSERT INTO table (columns) SELECT * FROM unnest(rows)``, the columns of the first row."""
    if not rows:
        return
    names = list(rows[0])
    params = {f"a_{name}": _values(table.c[name], rows, name) for name in names}
    sql = (
        f"INSERT INTO {table.name} ({', '.join(names)}) SELECT * FROM {_unnest(table, names, 'v')}"
    )
    conn.exec_driver_sql(sql, params)
