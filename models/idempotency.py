"""``idempotency_keys``: the first answer to a request made with an ``Idempotency-Key``.

``clarion web`` stores, per API key and ``Idempotency-Key`` header, a hash of
the request (method, path, body) and the answer it gave. The row is inserted
in the same transaction as the work it guards (``ON CONFLICT DO NOTHING``):
a racing second request with the same key waits on the unique index for the
first transaction, then finds its row. A repeat with the same request gets
the stored answer; with a different one, a conflict. A request that failed
(the transaction rolled back) leaves no row, so it may be tried again.
Every write to the table is here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from clarion.core.clock import utcnow
from models.base import Base, JSONType, Timestamp

KEY_MAX = 255


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"

    api_key_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(sa.String(KEY_MAX), primary_key=True)
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    status_code: Mapped[int | None] = mapped_column(sa.Integer)
    response: Mapped[Any] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(
        Timestamp, server_default=sa.func.current_timestamp(), default=utcnow, index=True
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Stored:
    """What an earlier request with the same key left."""

    request_hash: str
    status_code: int
    response: Any


def claim(session: Session, api_key_id: uuid.UUID, key: str, request_hash: str) -> Stored | None:
    """Take ``key`` for this request inside ``session``'s transaction.

    Returns None when this request is the first (the caller does the work, then
    :func:`record`); else what the first one stored, once its transaction ended.
    """
    table = IdempotencyRecord.__table__
    assert isinstance(table, sa.Table)
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = (
        insert(table)
        .values(
            api_key_id=api_key_id,
            idempotency_key=key,
            request_hash=request_hash,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["api_key_id", "idempotency_key"])
        .returning(table.c.api_key_id)
    )
    if session.execute(stmt).scalar_one_or_none() is not None:
        return None
    row = session.get_one(IdempotencyRecord, (api_key_id, key))
    return Stored(row.request_hash, int(row.status_code or 200), row.response)


def record(
    session: Session, api_key_id: uuid.UUID, key: str, status_code: int, response: Any
) -> None:
    """Store the answer of the request that claimed ``key`` (same transaction)."""
    session.execute(
        sa.update(IdempotencyRecord)
        .where(
            IdempotencyRecord.api_key_id == api_key_id,
            IdempotencyRecord.idempotency_key == key,
        )
        .values(status_code=status_code, response=response)
        .execution_options(synchronize_session=False)
    )
