"""The gateway's database access: the only code that writes the real-time tables' rows.

Everything here is synchronous SQLAlchemy; the gateway runs it in worker
threads (``asyncio.to_thread``) so the event loop never waits on the
database. Writes are batched by :class:`realtime.writer.Writer`: one
``executemany`` per flush, not one statement per message.

* connection rows: :meth:`Store.insert_connections`, :meth:`Store.update_connections`,
  :meth:`Store.sweep_stale`;
* event rows: :meth:`Store.record_event_stats` merges acknowledgements and
  per-channel delivery status into ``acknowledgments`` / ``delivery_status``;
* history: :meth:`Store.history` answers a resume; :meth:`Store.written_since`
  what a gateway missed while its Redis subscription was down.

Notification state (delivered, read, clicked) is written by
:class:`models.inbox.Inbox`, not here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from clarion.core.clock import utcnow
from models.enums import ConnectionStatus
from models.realtime import RealTimeEvent, WebSocketConnection
from realtime.outbox import event_payload
from realtime.visibility import EventView, Viewer, can_see, subscription_keys

#: Most events one resume replays; beyond it the client is told of a gap.
REPLAY_LIMIT = 10_000
WEBSOCKET_CHANNEL = "websocket"
OPEN_STATUSES = (
    ConnectionStatus.CONNECTING,
    ConnectionStatus.CONNECTED,
    ConnectionStatus.DISCONNECTING,
)


@dataclasses.dataclass(slots=True)
class EventStats:
    """What one gateway observed about one event since its last flush."""

    sent: int = 0
    redelivered: int = 0
    acked: int = 0
    unacked: int = 0
    acks: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class Gap:
    key: str
    last_seq: int
    first_available_seq: int | None

    def frame(self) -> dict[str, Any]:
        return {
            "type": "gap",
            "subscription": self.key,
            "last_seq": self.last_seq,
            "first_available_seq": self.first_available_seq,
            "recovered": False,
        }


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"

    # --- connections -------------------------------------------------------------

    def insert_connections(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert new connection rows; ``reconnect_count`` counts the session's earlier rows."""
        if not rows:
            return
        c = WebSocketConnection
        with Session(self.engine) as s, s.begin():
            sessions = {(r["user_id"], r["session_id"]) for r in rows}
            earlier: dict[tuple[uuid.UUID, str], int] = defaultdict(int)
            for user_id, session_id, count in s.execute(
                sa.select(c.user_id, c.session_id, sa.func.count())
                .where(c.session_id.in_([sid for _, sid in sessions]))
                .group_by(c.user_id, c.session_id)
            ):
                earlier[(user_id, session_id)] = int(count)
            values = []
            for r in rows:
                key = (r["user_id"], r["session_id"])
                values.append({**r, "reconnect_count": earlier[key]})
                earlier[key] += 1
            s.execute(sa.insert(c), values)

    def update_connections(self, updates: Sequence[dict[str, Any]]) -> None:
        """Apply updates (each a dict with ``connection_id``), batched by column set."""
        if not updates:
            return
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        now = utcnow()
        for u in updates:
            row = {**u, "updated_at": now}
            groups[tuple(sorted(row))].append(row)
        c = cast(sa.Table, WebSocketConnection.__table__)
        with self.engine.begin() as conn:
            for columns, rows in groups.items():
                names = [k for k in columns if k != "connection_id"]
                stmt = (
                    sa.update(c)
                    .where(c.c.connection_id == sa.bindparam("b_connection_id"))
                    .values({k: sa.bindparam(f"b_{k}") for k in names})
                )
                conn.execute(stmt, [{f"b_{k}": v for k, v in r.items()} for r in rows])

    def sweep_stale(self, *, older_than: float, exclude: Iterable[uuid.UUID] = ()) -> int:
        """Close rows left open by a gateway that died: no heartbeat for ``older_than`` s."""
        now = utcnow()
        cutoff = now - dt.timedelta(seconds=older_than)
        c = WebSocketConnection
        excluded = list(exclude)
        with self.engine.begin() as conn:
            stmt = (
                sa.update(c)
                .where(
                    c.connection_status.in_(OPEN_STATUSES),
                    sa.func.coalesce(c.last_heartbeat, c.connected_at) < cutoff,
                )
                .values(
                    connection_status=ConnectionStatus.DISCONNECTED,
                    disconnected_at=now,
                    disconnect_reason="swept: no heartbeat (gateway lost)",
                    updated_at=now,
                )
            )
            if excluded:
                stmt = stmt.where(c.connection_id.not_in(excluded))
            return int(conn.execute(stmt).rowcount or 0)

    # --- events ------------------------------------------------------------------

    def record_event_stats(self, stats: Mapping[str, EventStats]) -> None:
        """Merge one flush's acknowledgements and delivery counts into the event rows.

        ``delivery_status`` is ``{"websocket": {"sent", "redelivered", "acked",
        "unacked", "updated_at"}}``, counts summed over every gateway;
        ``acknowledgments`` maps ``"<user_id>/<connection_id>"`` to the ack.
        The rows are locked while merged, so concurrent gateways do not lose counts.
        """
        if not stats:
            return
        e = RealTimeEvent
        now = utcnow().isoformat()
        ids = sorted(stats)
        with Session(self.engine) as s, s.begin():
            rows = s.execute(
                sa.select(e.event_id, e.delivery_status, e.acknowledgments)
                .where(e.event_id.in_([uuid.UUID(i) for i in ids]))
                .order_by(e.event_id)
                .with_for_update()
            ).all()
            updates = []
            for event_id, status, acks in rows:
                st = stats[str(event_id)]
                merged = dict(status or {})
                ws = dict(merged.get(WEBSOCKET_CHANNEL) or {})
                for name in ("sent", "redelivered", "acked", "unacked"):
                    ws[name] = int(ws.get(name, 0)) + getattr(st, name)
                ws["updated_at"] = now
                merged[WEBSOCKET_CHANNEL] = ws
                all_acks = dict(acks or {})
                all_acks.update(st.acks)
                updates.append({"b_id": event_id, "b_status": merged, "b_acks": all_acks or None})
            if not updates:
                return  # events published without a row (or already pruned)
            t = cast(sa.Table, RealTimeEvent.__table__)
            s.execute(
                sa.update(t)
                .where(t.c.event_id == sa.bindparam("b_id"))
                .values(
                    delivery_status=sa.bindparam("b_status"), acknowledgments=sa.bindparam("b_acks")
                ),
                updates,
            )

    def history(
        self, last_seq: Mapping[str, int], viewer: Viewer, *, window: float
    ) -> tuple[list[tuple[EventView, bool]], list[Gap]]:
        """What a client resuming with ``last_seq`` (key -> last sequence seen) missed.

        Returns the events within the history ``window`` newer than the
        client's last sequence for at least one of their keys and visible to
        ``viewer``, in sequence order, each with a flag "not yet published";
        and a :class:`Gap` for every key where a visible event the client
        missed is already older than the window.
        """
        if not last_seq:
            return [], []
        now = time.time()
        cutoff = dt.datetime.fromtimestamp(now - window, dt.UTC)
        e = RealTimeEvent
        matches = sa.or_(*(self._key_condition(k) for k in last_seq))
        rows = self._fetch(
            sa.select(e)
            .where(
                e.sequence_number > min(last_seq.values()),
                e.generated_at >= cutoff,
                matches,
            )
            .order_by(e.sequence_number)
            .limit(REPLAY_LIMIT)
        )
        replay: list[tuple[EventView, bool]] = []
        first_in_window: dict[str, int] = {}
        for view, unpublished in rows:
            keys = [k for k in subscription_keys(view) if k in last_seq]
            for k in keys:
                first_in_window.setdefault(k, view.seq)
            if any(view.seq > last_seq[k] for k in keys) and can_see(view, viewer, now):
                replay.append((view, unpublished))
        gaps: list[Gap] = []
        truncated = len(rows) >= REPLAY_LIMIT
        for key, last in last_seq.items():
            missed = self._fetch(
                sa.select(e)
                .where(
                    e.sequence_number > last,
                    e.generated_at < cutoff,
                    self._key_condition(key),
                )
                .order_by(e.sequence_number.desc())
                .limit(200)
            )
            lost = any(key in subscription_keys(v) and can_see(v, viewer, now) for v, _ in missed)
            if lost or truncated:
                gaps.append(Gap(key, last, first_in_window.get(key)))
        return replay, gaps

    def written_since(self, since: float, limit: int) -> list[tuple[EventView, bool]]:
        """Events written at or after POSIX time ``since``, in sequence order, at most ``limit``.

        What a gateway may have missed while its Redis subscription was down:
        the caller drops those it received and checks who may see the rest.
        """
        e = RealTimeEvent
        return self._fetch(
            sa.select(e)
            .where(e.generated_at >= dt.datetime.fromtimestamp(since, dt.UTC))
            .order_by(e.sequence_number)
            .limit(limit)
        )

    def _fetch(self, stmt: sa.Select[Any]) -> list[tuple[EventView, bool]]:
        with Session(self.engine) as s:
            return [
                (EventView.from_payload(event_payload(r)), r.published_at is None)
                for r in s.scalars(stmt)
            ]

    def _key_condition(self, key: str) -> sa.ColumnElement[bool]:
        e = RealTimeEvent
        if key.startswith("auction:"):
            try:
                return e.auction_id == uuid.UUID(key.removeprefix("auction:"))
            except ValueError:
                return sa.false()
        if self.postgres:
            channels = sa.type_coerce(e.broadcast_channels, postgresql.JSONB)
            return channels.contains([key])
        return sa.true()  # SQLite: the topic is checked in Python (subscription_keys)
