"""Every write to ``user_locales``: one locale per user, replaced in place."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from clarion.core.clock import utcnow
from models.notifications import UserLocale


def set_locale(session: Session, user_id: uuid.UUID, locale: str) -> str:
    """Insert or replace the user's locale (flushed, not committed); returns it."""
    now = utcnow()
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    table = UserLocale.__table__
    assert isinstance(table, sa.Table)
    stmt = insert(table).values(user_id=user_id, locale=locale, created_at=now, updated_at=now)
    # An upsert: two concurrent calls for one user end with one row, the last one's.
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["user_id"], set_={"locale": locale, "updated_at": now}
        )
    )
    return locale


def get_locale(session: Session, user_id: uuid.UUID) -> str | None:
    return session.scalars(
        sa.select(UserLocale.locale).where(UserLocale.user_id == user_id)
    ).one_or_none()


def get_locales(session: Session, user_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The stored locale of each of ``user_ids`` that has one.

    On PostgreSQL the ids go as one array parameter (``= ANY``): an ``IN``
    list of 20,000 placeholders cost more in the driver's query conversion
    than the query itself. SQLite gets ``IN`` lists of 10,000.
    """
    users = list(user_ids)
    found: dict[uuid.UUID, str] = {}
    if session.get_bind().dialect.name == "postgresql":
        ids = sa.bindparam("user_ids", users, type_=postgresql.ARRAY(sa.Uuid()))
        rows = session.execute(
            sa.select(UserLocale.user_id, UserLocale.locale).where(
                UserLocale.user_id == sa.any_(ids)
            )
        )
        return {user: locale for user, locale in rows}
    for start in range(0, len(users), 10_000):
        rows = session.execute(
            sa.select(UserLocale.user_id, UserLocale.locale).where(
                UserLocale.user_id.in_(users[start : start + 10_000])
            )
        )
        found.update({user: locale for user, locale in rows})
    return found
