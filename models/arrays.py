"""Many rows in one statement on PostgreSQL: the rows as one JSON document.

``executemany`` of an UPDATE or INSERT is one statement per row: PostgreSQL
parses, plans and executes each, and the driver binds each row's values one
by one. On the workers' hot path (a write-back of a batch of deliveries:
their rows, their attempts, their notifications) and in the scheduler's claim
(a delivery row per channel), that per-row overhead was most of the
database's CPU. Here a batch is one statement whatever its size: the rows
travel as one JSON array (encoded by the standard library's C encoder) and
``json_to_recordset`` turns them back into typed rows on the server
(``UPDATE ... FROM json_to_recordset(...)``, ``INSERT ... SELECT``). Array
parameters (``unnest``) were tried first: psycopg builds array literals in
Python, value by value, which cost the worker more than the statements saved.

The record's column types come from the declared tables, compiled for
PostgreSQL, so the statements follow the models. Other databases (the
embedded SQLite default) keep ``executemany``: the callers choose with
:func:`supported`.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

__all__ = ["insert_rows", "supported", "update_rows"]

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


def supported(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _type(column: sa.Column[Any]) -> str:
    kind = column.type
    if isinstance(kind, sa.String) and not isinstance(kind, sa.Enum):
        # Not VARCHAR(n): a longer value must be refused by the column's own
        # assignment, never cut on the way.
        return "TEXT"
    return str(kind.compile(dialect=_PG))


def _plain(value: object) -> object:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"cannot send {type(value).__name__} as a row value")


def _rows(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> str:
    return json.dumps([{n: row[n] for n in names} for row in rows], default=_plain)


def _recordset(table: sa.Table, names: Sequence[str], alias: str) -> str:
    columns = ", ".join(f"{name} {_type(table.c[name])}" for name in names)
    return f"json_to_recordset(%(rows)s::json) AS {alias}({columns})"


def update_rows(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    match: Sequence[str],
    assign: Sequence[str],
    raw: Mapping[str, str] | None = None,
) -> int:
    """``UPDATE table SET assign... FROM rows WHERE match...``; returns the row count.

    Each row maps every name of ``match`` and ``assign`` (column names) to its
    value. ``raw`` adds assignments written in SQL over the target ``t`` and
    the row ``v`` (``{"take_token": "NULL"}``); its names that are also row
    keys travel with the rows.
    """
    if not rows:
        return 0
    raw = dict(raw or {})
    extra = [k for k in raw if k not in match and k not in assign and k in rows[0]]
    names = [*match, *assign, *extra]
    sets = [f"{name} = v.{name}" for name in assign] + [f"{k} = {v}" for k, v in raw.items()]
    where = " AND ".join(f"t.{name} = v.{name}" for name in match)
    sql = (
        f"UPDATE {table.name} AS t SET {', '.join(sets)} "
        f"FROM {_recordset(table, names, 'v')} WHERE {where}"
    )
    return int(conn.exec_driver_sql(sql, {"rows": _rows(rows, names)}).rowcount)


def insert_rows(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """``INSERT INTO table (columns) SELECT ... FROM rows``, the columns of the first row."""
    if not rows:
        return
    names = list(rows[0])
    sql = (
        f"INSERT INTO {table.name} ({', '.join(names)}) "
        f"SELECT {', '.join(names)} FROM {_recordset(table, names, 'v')}"
    )
    conn.exec_driver_sql(sql, {"rows": _rows(rows, names)})
