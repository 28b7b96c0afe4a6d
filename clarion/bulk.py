"""``notify_many()``: one notification for each of many users, in one transaction.

When an auction with 20,000 watchers ends, each watcher gets a notification
rendered for them (the template in their locale, typed values in their
format) under an idempotency key of their own. ``notify()`` in a loop costs
two statements per user; here every entry is checked and rendered first
(users' locales read in one query, templates and the email layout once per
locale), then the rows go in with multi-row INSERTs of up to
:data:`INSERT_BATCH` rows. A bad entry refuses the whole call before
anything is written, naming the entry (``entries[17].user_id``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from clarion.api import Lookups, NotifyRequest, build_values
from clarion.core.db import get_engine, session_factory
from clarion.core.errors import MissingVariableError, NotFoundError, TemplateError, ValidationError
from clarion.core.parse import as_uuid
from clarion.core.settings import get_settings
from clarion.metrics import notification_created
from models import Notification
from models import locales as locale_rows

#: Rows per COPY (or per multi-row INSERT on SQLite).
INSERT_BATCH = 5000
#: Entries in one call.
MAX_ENTRIES = 100_000

_FIELDS = frozenset(f.name for f in dataclasses.fields(NotifyRequest))


def notify_many(
    entries: Sequence[Mapping[str, Any]],
    *,
    session: Session | None = None,
    **common: Any,
) -> list[uuid.UUID]:
    """Create one pending notification per entry; return their ids in entry order.

    Each entry is a mapping of :func:`clarion.notify`'s arguments with at
    least ``user_id`` (``{"user_id": u, "idempotency_key": f"won:{a}:{u}"}``);
    ``common`` holds the arguments shared by every entry (``template``,
    ``template_data``, ``auction_id``, ...), which an entry's own keys
    override. Every entry is validated and rendered as ``notify`` does it.

    An entry whose ``idempotency_key`` already names a notification gets that
    notification's id back and creates nothing; two entries of one call may
    not share a key.

    Raises :class:`~clarion.core.errors.ValidationError` naming the entry and
    its argument (``entries[3].template_data: template variable 'amount' is
    missing``) for the first bad entry; then nothing is written. With
    ``session`` the rows join the caller's transaction (flushed, not
    committed); without, Clarion commits them in one transaction of its own.
    """
    if isinstance(entries, str | bytes | Mapping) or not isinstance(entries, Sequence):
        raise ValidationError("entries", f"expected a list, got {type(entries).__name__}")
    if len(entries) > MAX_ENTRIES:
        raise ValidationError("entries", f"has {len(entries)} items; the limit is {MAX_ENTRIES}")
    unknown = sorted(set(common) - _FIELDS - {"user_id"})
    if unknown:
        raise TypeError(f"notify_many() got unexpected keyword arguments: {', '.join(unknown)}")
    if "user_id" in common:
        raise ValidationError("user_id", "belongs in each entry, not in the common arguments")
    if session is None:
        engine = get_engine(get_settings().effective_database_url)
        with session_factory(engine)() as own, own.begin():
            return _create_many(own, entries, common)
    return _create_many(session, entries, common)


def _request(index: int, entry: object, common: Mapping[str, Any]) -> NotifyRequest:
    name = f"entries[{index}]"
    if not isinstance(entry, Mapping):
        raise ValidationError(name, f"expected an object, got {type(entry).__name__}")
    unknown = sorted(str(k) for k in entry if k not in _FIELDS)
    if unknown:
        raise ValidationError(f"{name}.{unknown[0]}", "is not an argument of notify")
    if "user_id" not in entry:
        raise ValidationError(f"{name}.user_id", "is required")
    return NotifyRequest(**{**common, **entry})


def _create_many(
    session: Session, entries: Sequence[Mapping[str, Any]], common: Mapping[str, Any]
) -> list[uuid.UUID]:
    requests = [_request(i, e, common) for i, e in enumerate(entries)]
    lookups = Lookups(session)
    lookups.locales = _stored_locales(session, requests)
    rows: list[dict[str, Any]] = []
    keys: dict[str, int] = {}
    now = dt.datetime.now(dt.UTC)
    for i, r in enumerate(requests):
        try:
            values = build_values(r, lookups)
        except ValidationError as exc:
            raise ValidationError(f"entries[{i}].{exc.field}", exc.problem) from None
        except MissingVariableError as exc:
            raise ValidationError(f"entries[{i}].template_data", str(exc)) from None
        except TemplateError as exc:
            raise ValidationError(f"entries[{i}].template", str(exc)) from None
        except NotFoundError as exc:
            raise ValidationError(f"entries[{i}].template", str(exc).split(": ", 1)[-1]) from None
        key = values["idempotency_key"]
        if key is not None:
            if key in keys:
                raise ValidationError(
                    f"entries[{i}].idempotency_key",
                    f"is also the key of entries[{keys[key]}]",
                )
            keys[key] = i
        values.update(
            notification_id=uuid.uuid4(),
            created_at=now,
            updated_at=now,
            delivery_attempts=0,
            is_read=False,
            is_archived=False,
        )
        rows.append(values)
    # A savepoint: a refusal met while inserting (a key another user holds)
    # leaves nothing behind, in the caller's transaction too.
    with session.begin_nested():
        ids = _insert_rows(session, rows)
    for values in rows:
        if ids[values["notification_id"]] == values["notification_id"]:
            priority = values["priority"]
            notification_created(str(getattr(priority, "value", priority)))
    return [ids[values["notification_id"]] for values in rows]


def _stored_locales(
    session: Session, requests: Sequence[NotifyRequest]
) -> dict[uuid.UUID, str | None]:
    """Every entry's user -> stored locale (None: none), read in one go.

    A malformed user id is left out here; building its row names it.
    """
    users: set[uuid.UUID] = set()
    for r in requests:
        if r.locale is None:
            try:
                users.add(as_uuid(r.user_id, "user_id"))
            except ValidationError:
                continue
    found: dict[uuid.UUID, str | None] = dict.fromkeys(users)
    found.update(locale_rows.get_locales(session, users))
    return found


def _insert_rows(session: Session, rows: list[dict[str, Any]]) -> dict[uuid.UUID, uuid.UUID]:
    """Insert ``rows``; map each new id to the id of the row that holds it.

    An entry whose idempotency key is taken maps to the existing
    notification (refused if that one is another user's).
    """
    table = Notification.__table__
    assert isinstance(table, sa.Table)
    columns = sorted({c for row in rows for c in row})
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = (
        insert(table)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(table.c.notification_id)
    )
    copy = dialect == "postgresql" and _copy_supported(session)
    result: dict[uuid.UUID, uuid.UUID] = {}
    for start in range(0, len(rows), INSERT_BATCH):
        chunk: list[dict[str, Any]] = [
            {c: row.get(c) for c in columns} for row in rows[start : start + INSERT_BATCH]
        ]
        if copy:
            inserted = _copy_in(session, table, columns, chunk)
        else:
            # executemany with RETURNING: SQLAlchemy sends it as multi-row
            # INSERTs ("insertmanyvalues"), compiled once.
            inserted = set(session.execute(stmt, chunk).scalars())
        taken = {
            row["idempotency_key"]: row for row in chunk if row["notification_id"] not in inserted
        }
        for row in chunk:
            if row["notification_id"] in inserted:
                result[row["notification_id"]] = row["notification_id"]
        if taken:
            existing = session.execute(
                sa.select(
                    Notification.idempotency_key, Notification.notification_id, Notification.user_id
                ).where(Notification.idempotency_key.in_(list(taken)))
            ).all()
            for key, notification_id, user_id in existing:
                row = taken.pop(key)
                if user_id != row["user_id"]:
                    index = start + chunk.index(row)
                    raise ValidationError(
                        f"entries[{index}].idempotency_key",
                        "is already used by a notification for another user",
                    )
                result[row["notification_id"]] = notification_id
            if taken:  # cannot happen: a conflicting key names a row
                raise RuntimeError("idempotency keys conflicted but no row holds them")
    return result


def _copy_supported(session: Session) -> bool:
    import psycopg

    return isinstance(session.connection().connection.driver_connection, psycopg.Connection)


def _copy_in(
    session: Session, table: sa.Table, columns: list[str], rows: list[dict[str, Any]]
) -> set[uuid.UUID]:
    """COPY ``rows`` into a scratch table, then INSERT ... ON CONFLICT DO NOTHING from it.

    A multi-row INSERT of thousands of rows spent most of its time in the
    driver turning 25 placeholders per row into PostgreSQL's; COPY sends the
    rows as data. The values go through the columns' own bind processors
    (enums as their labels, JSON as JSON), as an INSERT would send them.
    Returns the ids inserted (not those whose idempotency key was taken).
    """
    from psycopg.types.json import Json, Jsonb

    dialect = session.get_bind().dialect
    processors: list[Callable[[Any], Any] | None] = []
    for c in columns:
        kind = table.c[c].type
        if isinstance(kind, sa.JSON):
            # None is JSON null unless the column says otherwise, as in an INSERT.
            wrap = Jsonb if isinstance(kind, postgresql.JSONB) else Json
            processors.append(_json_processor(wrap, none_as_null=kind.none_as_null))
        else:
            processors.append(kind.bind_processor(dialect))
    raw = session.connection().connection.driver_connection
    assert raw is not None
    scratch = f"clarion_bulk_{uuid.uuid4().hex}"
    names = ", ".join(f'"{c}"' for c in columns)
    with raw.cursor() as cur:
        cur.execute(
            f"CREATE TEMP TABLE {scratch} (LIKE notifications INCLUDING DEFAULTS) ON COMMIT DROP"
        )
        with cur.copy(f"COPY {scratch} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(
                    [
                        value if process is None else process(value)
                        for value, process in zip(
                            (row[c] for c in columns), processors, strict=True
                        )
                    ]
                )
        cur.execute(
            f"INSERT INTO notifications ({names}) SELECT {names} FROM {scratch}"
            " ON CONFLICT (idempotency_key) DO NOTHING RETURNING notification_id"
        )
        inserted = {r[0] for r in cur.fetchall()}
        cur.execute(f"DROP TABLE {scratch}")
    return inserted


def _json_processor(wrap: Callable[[Any], Any], *, none_as_null: bool) -> Callable[[Any], Any]:
    def process(value: Any) -> Any:
        if value is None and none_as_null:
            return None
        return wrap(value)

    return process
