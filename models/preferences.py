"""The delivery policy's tables (revision 0005) and the writes of users' settings.

* ``user_opt_outs``: a user opted out of a channel (``category`` ``*``) or of
  one category on a channel;
* ``user_quiet_hours``: a user's daily quiet window in an IANA time zone;
* ``collapse_windows``: the open collapse window per (user, auction,
  template), written only by the claim under its row lock;
* ``rate_counters``: messages per user, channel and clock hour, written only
  by the claim.

The settings are written here (:class:`PreferenceStore`); the last two
tables belong to ``models.claims``, which reads and writes them inside the
claim's transaction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, mapped_column

from clarion.core.clock import utcnow
from models.base import Base, Timestamp
from models.enums import Category, Channel
from models.notifications import ChannelType
from models.policy import QuietHours, UserPolicy

__all__ = [
    "CollapseWindow",
    "PreferenceStore",
    "RateCounter",
    "UserOptOut",
    "UserQuietHours",
    "load_user_policies",
]


class UserOptOut(Base):
    __tablename__ = "user_opt_outs"

    opt_out_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    channel: Mapped[Channel] = mapped_column(ChannelType)
    #: One of the notification categories, or ``*`` for the whole channel.
    category: Mapped[str] = mapped_column(sa.String(20))
    created_at: Mapped[dt.datetime] = mapped_column(
        Timestamp, server_default=sa.func.current_timestamp(), default=utcnow
    )

    __table_args__ = (
        sa.UniqueConstraint("user_id", "channel", "category", name="uq_user_opt_outs_scope"),
    )


class UserQuietHours(Base):
    __tablename__ = "user_quiet_hours"

    user_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    time_zone: Mapped[str] = mapped_column(sa.String(64))
    starts_at: Mapped[dt.time] = mapped_column(sa.Time)
    ends_at: Mapped[dt.time] = mapped_column(sa.Time)
    updated_at: Mapped[dt.datetime] = mapped_column(
        Timestamp, server_default=sa.func.current_timestamp(), default=utcnow, onupdate=utcnow
    )


class CollapseWindow(Base):
    __tablename__ = "collapse_windows"

    user_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    auction_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    #: The template's key, auction_type/event.
    collapse_key: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    opened_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    closes_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    first_notification_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    carrier_notification_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    latest_notification_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    event_count: Mapped[int] = mapped_column(sa.Integer, server_default="0", default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(
        Timestamp, server_default=sa.func.current_timestamp(), default=utcnow, onupdate=utcnow
    )

    __table_args__ = (sa.Index("ix_collapse_windows_closes_at", "closes_at"),)


class RateCounter(Base):
    __tablename__ = "rate_counters"

    user_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    channel: Mapped[Channel] = mapped_column(ChannelType, primary_key=True)
    hour_start: Mapped[dt.datetime] = mapped_column(Timestamp, primary_key=True)
    sent: Mapped[int] = mapped_column(sa.Integer, server_default="0", default=0)

    __table_args__ = (sa.Index("ix_rate_counters_hour", "hour_start"),)


#: ``user_opt_outs.category`` of an opt-out of the whole channel.
ALL = "*"

_O: sa.Table = UserOptOut.__table__  # type: ignore[assignment]
_Q: sa.Table = UserQuietHours.__table__  # type: ignore[assignment]


def load_user_policies(
    conn: sa.Connection | Session, user_ids: set[uuid.UUID]
) -> dict[uuid.UUID, UserPolicy]:
    """Every given user's opt-outs and quiet hours (users with neither are left out)."""
    if not user_ids:
        return {}
    ids = list(user_ids)
    outs: dict[uuid.UUID, set[tuple[Channel, Category | None]]] = {}
    for user_id, channel, category in conn.execute(
        sa.select(_O.c.user_id, _O.c.channel, _O.c.category).where(_O.c.user_id.in_(ids))
    ):
        outs.setdefault(user_id, set()).add(
            (Channel(channel), None if category == ALL else Category(category))
        )
    quiet: dict[uuid.UUID, QuietHours] = {}
    for user_id, zone, start, end in conn.execute(
        sa.select(_Q.c.user_id, _Q.c.time_zone, _Q.c.starts_at, _Q.c.ends_at).where(
            _Q.c.user_id.in_(ids)
        )
    ):
        quiet[user_id] = QuietHours(zone, start, end)
    return {
        user: UserPolicy(frozenset(outs.get(user, ())), quiet.get(user))
        for user in outs.keys() | quiet.keys()
    }


@dataclasses.dataclass(frozen=True, slots=True)
class OptOut:
    channel: Channel
    category: Category | None


class PreferenceStore:
    """The writes of users' delivery settings, in the caller's session."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def opt_out(self, user_id: uuid.UUID, channel: Channel, category: Category | None) -> bool:
        """Record the opt-out; False when it was there already."""
        if self._find(user_id, channel, category) is not None:
            return False
        self.session.add(
            UserOptOut(
                user_id=user_id,
                channel=channel,
                category=ALL if category is None else category.value,
            )
        )
        self.session.flush()
        return True

    def opt_in(self, user_id: uuid.UUID, channel: Channel, category: Category | None) -> bool:
        """Remove the opt-out; False when there was none."""
        row = self._find(user_id, channel, category)
        if row is None:
            return False
        self.session.delete(row)
        self.session.flush()
        return True

    def opt_outs(self, user_id: uuid.UUID) -> list[OptOut]:
        rows = self.session.scalars(
            sa.select(UserOptOut)
            .where(UserOptOut.user_id == user_id)
            .order_by(UserOptOut.channel, UserOptOut.category)
        )
        return [
            OptOut(Channel(r.channel), None if r.category == ALL else Category(r.category))
            for r in rows
        ]

    def set_quiet_hours(self, user_id: uuid.UUID, quiet: QuietHours) -> None:
        row = self.session.get(UserQuietHours, user_id)
        if row is None:
            self.session.add(
                UserQuietHours(
                    user_id=user_id,
                    time_zone=quiet.time_zone,
                    starts_at=quiet.start,
                    ends_at=quiet.end,
                )
            )
        else:
            row.time_zone, row.starts_at, row.ends_at = quiet.time_zone, quiet.start, quiet.end
        self.session.flush()

    def clear_quiet_hours(self, user_id: uuid.UUID) -> bool:
        row = self.session.get(UserQuietHours, user_id)
        if row is None:
            return False
        self.session.delete(row)
        self.session.flush()
        return True

    def quiet_hours(self, user_id: uuid.UUID) -> QuietHours | None:
        row = self.session.get(UserQuietHours, user_id)
        return None if row is None else QuietHours(row.time_zone, row.starts_at, row.ends_at)

    def _find(
        self, user_id: uuid.UUID, channel: Channel, category: Category | None
    ) -> UserOptOut | None:
        return self.session.scalars(
            sa.select(UserOptOut).where(
                UserOptOut.user_id == user_id,
                UserOptOut.channel == channel,
                UserOptOut.category == (ALL if category is None else category.value),
            )
        ).first()
