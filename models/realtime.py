"""The spec's real-time tables: ``websocket_connections`` and ``real_time_events``."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.clock import utcnow
from models.base import Base, INETType, JSONType, Timestamp, enum_type
from models.enums import ConnectionStatus, EventCategory, EventPriority, Visibility

ConnectionStatusType = enum_type(ConnectionStatus, "connection_status")
EventCategoryType = enum_type(EventCategory, "event_category")
EventPriorityType = enum_type(EventPriority, "event_priority")
VisibilityType = enum_type(Visibility, "event_visibility")

#: Monotonic under concurrent inserts: every insert takes nextval() of it.
EVENT_SEQUENCE = sa.Sequence("real_time_events_sequence_number_seq", metadata=Base.metadata)

_uuid_default = sa.text("(gen_random_uuid())")


class WebSocketConnection(Base):
    __tablename__ = "websocket_connections"

    connection_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid, primary_key=True, default=uuid.uuid4, server_default=_uuid_default
    )
    user_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    session_id: Mapped[str] = mapped_column(sa.String(255))
    socket_id: Mapped[str] = mapped_column(sa.String(255))
    connection_status: Mapped[ConnectionStatus] = mapped_column(ConnectionStatusType)
    client_ip: Mapped[str] = mapped_column(INETType)
    user_agent: Mapped[str] = mapped_column(sa.Text)
    protocol_version: Mapped[str | None] = mapped_column(
        sa.String(20), server_default="1.0", default="1.0"
    )
    compression_enabled: Mapped[bool | None] = mapped_column(
        sa.Boolean, server_default=sa.false(), default=False
    )
    heartbeat_interval: Mapped[int | None] = mapped_column(
        sa.Integer, server_default="30", default=30
    )
    last_heartbeat: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    connected_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    disconnected_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    disconnect_reason: Mapped[str | None] = mapped_column(sa.String(255))
    reconnect_count: Mapped[int | None] = mapped_column(sa.Integer, server_default="0", default=0)
    bytes_sent: Mapped[int | None] = mapped_column(sa.BigInteger, server_default="0", default=0)
    bytes_received: Mapped[int | None] = mapped_column(sa.BigInteger, server_default="0", default=0)
    messages_sent: Mapped[int | None] = mapped_column(sa.Integer, server_default="0", default=0)
    messages_received: Mapped[int | None] = mapped_column(sa.Integer, server_default="0", default=0)
    subscriptions: Mapped[Any] = mapped_column(JSONType)
    auction_subscriptions: Mapped[Any] = mapped_column(JSONType)
    user_preferences: Mapped[Any | None] = mapped_column(JSONType)
    geo_location: Mapped[Any | None] = mapped_column(JSONType)
    device_info: Mapped[Any | None] = mapped_column(JSONType)
    bandwidth_usage: Mapped[Any | None] = mapped_column(JSONType)
    error_count: Mapped[int | None] = mapped_column(sa.Integer, server_default="0", default=0)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(
        Timestamp, server_default=sa.func.current_timestamp(), default=utcnow
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        Timestamp, server_default=sa.func.current_timestamp(), default=utcnow, onupdate=utcnow
    )

    __table_args__ = (
        sa.Index("idx_ws_connections_user", "user_id"),
        sa.Index("idx_ws_connections_session", "session_id"),
        sa.Index("idx_ws_connections_socket", "socket_id"),
        sa.Index("idx_ws_connections_status", "connection_status"),
        sa.Index("idx_ws_connections_heartbeat", "last_heartbeat"),
        sa.Index("idx_ws_connections_time", "connected_at"),
    )


class RealTimeEvent(Base):
    __tablename__ = "real_time_events"

    event_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid, primary_key=True, default=uuid.uuid4, server_default=_uuid_default
    )
    event_type: Mapped[str] = mapped_column(sa.String(100))
    event_category: Mapped[EventCategory] = mapped_column(EventCategoryType)
    auction_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    user_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    bid_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    item_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    event_data: Mapped[Any] = mapped_column(JSONType)
    event_metadata: Mapped[Any | None] = mapped_column(JSONType)
    priority: Mapped[EventPriority | None] = mapped_column(
        EventPriorityType, server_default=EventPriority.NORMAL.value, default=EventPriority.NORMAL
    )
    visibility: Mapped[Visibility] = mapped_column(VisibilityType)
    target_audience: Mapped[Any | None] = mapped_column(JSONType)
    broadcast_channels: Mapped[Any] = mapped_column(JSONType)
    sequence_number: Mapped[int] = mapped_column(
        # On PostgreSQL the migration also sets DEFAULT nextval(...) so that a
        # plain INSERT gets a number; SQLite has no sequences (see realtime.outbox).
        sa.BigInteger,
        EVENT_SEQUENCE,
    )
    previous_event_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    correlation_id: Mapped[str | None] = mapped_column(sa.String(255))
    causal_events: Mapped[Any | None] = mapped_column(JSONType)
    expected_impacts: Mapped[Any | None] = mapped_column(JSONType)
    generated_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    published_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    expires_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    retention_policy: Mapped[str | None] = mapped_column(
        sa.String(50), server_default="standard", default="standard"
    )
    delivery_status: Mapped[Any | None] = mapped_column(JSONType)
    ack_required: Mapped[bool | None] = mapped_column(
        sa.Boolean, server_default=sa.false(), default=False
    )
    ack_timeout: Mapped[int | None] = mapped_column(sa.Integer, server_default="30", default=30)
    acknowledgments: Mapped[Any | None] = mapped_column(JSONType)
    tags: Mapped[Any | None] = mapped_column(JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(
        Timestamp, server_default=sa.func.current_timestamp(), default=utcnow
    )

    __table_args__ = (
        sa.Index("idx_rt_events_type", "event_type"),
        sa.Index("idx_rt_events_category", "event_category"),
        sa.Index("idx_rt_events_auction", "auction_id"),
        sa.Index("idx_rt_events_user", "user_id"),
        sa.Index("idx_rt_events_sequence", "sequence_number"),
        sa.Index("idx_rt_events_time", "generated_at"),
        sa.Index("idx_rt_events_priority", "priority"),
        sa.Index("idx_rt_events_visibility", "visibility"),
        sa.Index("idx_rt_events_expiry", "expires_at"),
        sa.Index("idx_rt_events_correlation", "correlation_id"),
        # Not in the spec: platform columns stay indexed in standalone mode.
        sa.Index("ix_real_time_events_bid_id", "bid_id"),
        sa.Index("ix_real_time_events_item_id", "item_id"),
    )
