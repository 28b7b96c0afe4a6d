"""Initial schema: the spec's three tables and what delivery adds beside them.

Revision ID: 0001
Revises:
Create Date: 2026-11-30

Self-contained, so that replaying it later builds what it built on the day it
was written: the seed templates and the platform's foreign keys are literal
data here, not read from live code. Whether to create those foreign keys is
decided by the migrations' entry point (``migrations/env.py``, from
``CLARION_PLATFORM_FOREIGN_KEYS``) and handed in through
``config.attributes["platform_foreign_keys"]``. The one import of Clarion's is
the error type :class:`~migrations.platform.PlatformTablesMissing`, a name
that stays.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

from migrations.platform import PlatformTablesMissing

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


EVENT_SEQUENCE = "real_time_events_sequence_number_seq"
ENUM_TYPES = (
    "attempt_outcome",
    "connection_status",
    "delivery_status",
    "event_category",
    "event_priority",
    "event_visibility",
    "notification_category",
    "notification_channel",
    "notification_priority",
    "notification_status",
)

# A statement-level trigger: one wake-up per INSERT statement, however many
# rows it inserts (the scheduler re-reads the table; the payload is not needed).
NOTIFY_FUNCTION = """
CREATE FUNCTION clarion_notify_new_notification() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('clarion_notifications', '');
    RETURN NULL;
END;
$$
"""
NOTIFY_TRIGGER = """
CREATE TRIGGER clarion_notifications_inserted
AFTER INSERT ON notifications
FOR EACH STATEMENT EXECUTE FUNCTION clarion_notify_new_notification()
"""

#: The spec's foreign keys to the auction platform's tables, as of this revision:
#: (table, column, platform table, platform column).
PLATFORM_FOREIGN_KEYS = (
    ("notifications", "user_id", "users", "user_id"),
    ("notifications", "auction_id", "auctions", "auction_id"),
    ("notifications", "bid_id", "bids", "bid_id"),
    ("notifications", "item_id", "auction_items", "item_id"),
    ("websocket_connections", "user_id", "users", "user_id"),
    ("real_time_events", "auction_id", "auctions", "auction_id"),
    ("real_time_events", "user_id", "users", "user_id"),
    ("real_time_events", "bid_id", "bids", "bid_id"),
    ("real_time_events", "item_id", "auction_items", "item_id"),
)

#: The spec's auction notification templates, as of this revision:
#: (auction_type, event, category, title, message, priority, channels, body_format).
SEED_TEMPLATES: tuple[tuple[str, str, str, str, str, str, tuple[str, ...], str], ...] = (
    (
        "english",
        "new_bid",
        "bid",
        "New bid on {auction_title}",
        "{bidder} bid {amount} on {item_title}",
        "normal",
        ("in_app", "push"),
        "text",
    ),
    (
        "english",
        "outbid",
        "bid",
        "You've been outbid",
        "Someone bid higher than your {amount} bid",
        "high",
        ("in_app", "push", "email"),
        "text",
    ),
    (
        "penny",
        "bid_placed",
        "bid",
        "Bid placed successfully",
        "Your bid extended {auction_title} by {extension_seconds}s",
        "normal",
        ("in_app",),
        "text",
    ),
    (
        "penny",
        "auction_ending",
        "auction",
        "Auction ending soon!",
        "{auction_title} ends in {time_remaining}",
        "urgent",
        ("in_app", "push"),
        "text",
    ),
    (
        "system",
        "auction_started",
        "auction",
        "Auction started",
        "{auction_title} is now live",
        "normal",
        ("in_app", "email"),
        "text",
    ),
    (
        "system",
        "auction_ended",
        "auction",
        "Auction completed",
        "{auction_title} ended. Winner: {winner}",
        "normal",
        ("in_app", "email"),
        "text",
    ),
)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute(sa.schema.CreateSequence(sa.Sequence(EVENT_SEQUENCE)))
    op.create_table(
        "notification_templates",
        sa.Column("template_id", sa.Uuid(), nullable=False),
        sa.Column("auction_type", sa.String(length=50), nullable=False),
        sa.Column("event", sa.String(length=100), nullable=False),
        sa.Column(
            "category",
            sa.Enum(
                "auction",
                "bid",
                "payment",
                "system",
                "marketing",
                name="notification_category",
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column(
            "priority",
            sa.Enum(
                "low",
                "normal",
                "high",
                "urgent",
                name="notification_priority",
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column(
            "channels",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("body_format", sa.String(length=10), server_default="text", nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "body_format IN ('text', 'html')", name=op.f("ck_notification_templates_body_format")
        ),
        sa.PrimaryKeyConstraint("template_id", name=op.f("pk_notification_templates")),
        sa.UniqueConstraint("auction_type", "event", name="uq_notification_templates_key"),
    )
    op.create_table(
        "real_time_events",
        sa.Column(
            "event_id", sa.Uuid(), server_default=sa.text("(gen_random_uuid())"), nullable=False
        ),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column(
            "event_category",
            sa.Enum(
                "auction",
                "bid",
                "user",
                "system",
                "notification",
                name="event_category",
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("auction_id", sa.Uuid(), nullable=True),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("bid_id", sa.Uuid(), nullable=True),
        sa.Column("item_id", sa.Uuid(), nullable=True),
        sa.Column(
            "event_data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "event_metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "priority",
            sa.Enum(
                "low", "normal", "high", "critical", name="event_priority", create_constraint=True
            ),
            server_default="normal",
            nullable=True,
        ),
        sa.Column(
            "visibility",
            sa.Enum(
                "public",
                "authenticated",
                "private",
                "targeted",
                name="event_visibility",
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column(
            "target_audience",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "broadcast_channels",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("sequence_number", sa.BigInteger(), nullable=False),
        sa.Column("previous_event_id", sa.Uuid(), nullable=True),
        sa.Column("correlation_id", sa.String(length=255), nullable=True),
        sa.Column(
            "causal_events",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "expected_impacts",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("generated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "retention_policy", sa.String(length=50), server_default="standard", nullable=True
        ),
        sa.Column(
            "delivery_status",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("ack_required", sa.Boolean(), server_default=sa.text("false"), nullable=True),
        sa.Column("ack_timeout", sa.Integer(), server_default="30", nullable=True),
        sa.Column(
            "acknowledgments",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "tags",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_real_time_events")),
    )
    op.create_index("idx_rt_events_auction", "real_time_events", ["auction_id"], unique=False)
    op.create_index("idx_rt_events_category", "real_time_events", ["event_category"], unique=False)
    op.create_index(
        "idx_rt_events_correlation", "real_time_events", ["correlation_id"], unique=False
    )
    op.create_index("idx_rt_events_expiry", "real_time_events", ["expires_at"], unique=False)
    op.create_index("idx_rt_events_priority", "real_time_events", ["priority"], unique=False)
    op.create_index("idx_rt_events_sequence", "real_time_events", ["sequence_number"], unique=False)
    op.create_index("idx_rt_events_time", "real_time_events", ["generated_at"], unique=False)
    op.create_index("idx_rt_events_type", "real_time_events", ["event_type"], unique=False)
    op.create_index("idx_rt_events_user", "real_time_events", ["user_id"], unique=False)
    op.create_index("idx_rt_events_visibility", "real_time_events", ["visibility"], unique=False)
    op.create_index("ix_real_time_events_bid_id", "real_time_events", ["bid_id"], unique=False)
    op.create_index("ix_real_time_events_item_id", "real_time_events", ["item_id"], unique=False)
    op.create_table(
        "user_addresses",
        sa.Column(
            "address_id", sa.Uuid(), server_default=sa.text("(gen_random_uuid())"), nullable=False
        ),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column(
            "channel",
            sa.Enum(
                "email",
                "sms",
                "push",
                "in_app",
                "webhook",
                name="notification_channel",
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("address", sa.String(length=2048), nullable=False),
        sa.Column("secret", sa.String(length=255), nullable=True),
        sa.Column("label", sa.String(length=100), nullable=True),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_reason", sa.String(length=255), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("address_id", name=op.f("pk_user_addresses")),
        sa.UniqueConstraint("user_id", "channel", "address", name="uq_user_addresses_address"),
    )
    op.create_index(
        "ix_user_addresses_user_channel", "user_addresses", ["user_id", "channel"], unique=False
    )
    op.create_table(
        "websocket_connections",
        sa.Column(
            "connection_id",
            sa.Uuid(),
            server_default=sa.text("(gen_random_uuid())"),
            nullable=False,
        ),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.String(length=255), nullable=False),
        sa.Column("socket_id", sa.String(length=255), nullable=False),
        sa.Column(
            "connection_status",
            sa.Enum(
                "connecting",
                "connected",
                "disconnecting",
                "disconnected",
                name="connection_status",
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column(
            "client_ip",
            sa.String(length=45).with_variant(postgresql.INET(), "postgresql"),
            nullable=False,
        ),
        sa.Column("user_agent", sa.Text(), nullable=False),
        sa.Column("protocol_version", sa.String(length=20), server_default="1.0", nullable=True),
        sa.Column(
            "compression_enabled", sa.Boolean(), server_default=sa.text("false"), nullable=True
        ),
        sa.Column("heartbeat_interval", sa.Integer(), server_default="30", nullable=True),
        sa.Column("last_heartbeat", sa.DateTime(timezone=True), nullable=True),
        sa.Column("connected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disconnected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disconnect_reason", sa.String(length=255), nullable=True),
        sa.Column("reconnect_count", sa.Integer(), server_default="0", nullable=True),
        sa.Column("bytes_sent", sa.BigInteger(), server_default="0", nullable=True),
        sa.Column("bytes_received", sa.BigInteger(), server_default="0", nullable=True),
        sa.Column("messages_sent", sa.Integer(), server_default="0", nullable=True),
        sa.Column("messages_received", sa.Integer(), server_default="0", nullable=True),
        sa.Column(
            "subscriptions",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "auction_subscriptions",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "user_preferences",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "geo_location",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "device_info",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "bandwidth_usage",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("error_count", sa.Integer(), server_default="0", nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("connection_id", name=op.f("pk_websocket_connections")),
    )
    op.create_index(
        "idx_ws_connections_heartbeat", "websocket_connections", ["last_heartbeat"], unique=False
    )
    op.create_index(
        "idx_ws_connections_session", "websocket_connections", ["session_id"], unique=False
    )
    op.create_index(
        "idx_ws_connections_socket", "websocket_connections", ["socket_id"], unique=False
    )
    op.create_index(
        "idx_ws_connections_status", "websocket_connections", ["connection_status"], unique=False
    )
    op.create_index(
        "idx_ws_connections_time", "websocket_connections", ["connected_at"], unique=False
    )
    op.create_index("idx_ws_connections_user", "websocket_connections", ["user_id"], unique=False)
    op.create_table(
        "notifications",
        sa.Column(
            "notification_id",
            sa.Uuid(),
            server_default=sa.text("(gen_random_uuid())"),
            nullable=False,
        ),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column(
            "notification_type",
            sa.Enum(
                "email",
                "sms",
                "push",
                "in_app",
                "webhook",
                name="notification_channel",
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column(
            "category",
            sa.Enum(
                "auction",
                "bid",
                "payment",
                "system",
                "marketing",
                name="notification_category",
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column(
            "priority",
            sa.Enum(
                "low",
                "normal",
                "high",
                "urgent",
                name="notification_priority",
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("auction_id", sa.Uuid(), nullable=True),
        sa.Column("bid_id", sa.Uuid(), nullable=True),
        sa.Column("item_id", sa.Uuid(), nullable=True),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column(
            "rich_content",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("action_url", sa.String(length=500), nullable=True),
        sa.Column("action_label", sa.String(length=100), nullable=True),
        sa.Column("template_id", sa.Uuid(), nullable=True),
        sa.Column(
            "template_data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "delivery_channels",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("clicked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "sent",
                "delivered",
                "read",
                "clicked",
                "failed",
                "cancelled",
                name="notification_status",
                create_constraint=True,
            ),
            server_default="pending",
            nullable=False,
        ),
        sa.Column("delivery_attempts", sa.Integer(), server_default="0", nullable=True),
        sa.Column("max_attempts", sa.Integer(), server_default="3", nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column(
            "provider_response",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("is_read", sa.Boolean(), server_default=sa.text("false"), nullable=True),
        sa.Column("is_archived", sa.Boolean(), server_default=sa.text("false"), nullable=True),
        sa.Column(
            "tags",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "max_attempts >= 1", name=op.f("ck_notifications_max_attempts_positive")
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["notification_templates.template_id"],
            name=op.f("fk_notifications_template_id_notification_templates"),
        ),
        sa.PrimaryKeyConstraint("notification_id", name=op.f("pk_notifications")),
    )
    op.create_index("idx_notifications_auction", "notifications", ["auction_id"], unique=False)
    op.create_index("idx_notifications_category", "notifications", ["category"], unique=False)
    op.create_index("idx_notifications_expiry", "notifications", ["expires_at"], unique=False)
    op.create_index("idx_notifications_priority", "notifications", ["priority"], unique=False)
    op.create_index("idx_notifications_read", "notifications", ["is_read"], unique=False)
    op.create_index("idx_notifications_scheduled", "notifications", ["scheduled_at"], unique=False)
    op.create_index("idx_notifications_status", "notifications", ["status"], unique=False)
    op.create_index("idx_notifications_time", "notifications", ["created_at"], unique=False)
    op.create_index("idx_notifications_type", "notifications", ["notification_type"], unique=False)
    op.create_index("idx_notifications_user", "notifications", ["user_id"], unique=False)
    op.create_index("ix_notifications_bid_id", "notifications", ["bid_id"], unique=False)
    op.create_index(
        "ix_notifications_due",
        "notifications",
        ["priority", "created_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending' AND dispatched_at IS NULL"),
        sqlite_where=sa.text("status = 'pending' AND dispatched_at IS NULL"),
    )
    op.create_index(
        "ix_notifications_idempotency_key", "notifications", ["idempotency_key"], unique=True
    )
    op.create_index("ix_notifications_item_id", "notifications", ["item_id"], unique=False)
    op.create_table(
        "notification_deliveries",
        sa.Column(
            "delivery_id", sa.Uuid(), server_default=sa.text("(gen_random_uuid())"), nullable=False
        ),
        sa.Column("notification_id", sa.Uuid(), nullable=False),
        sa.Column(
            "channel",
            sa.Enum(
                "email",
                "sms",
                "push",
                "in_app",
                "webhook",
                name="notification_channel",
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "sending",
                "sent",
                "delivered",
                "failed",
                "cancelled",
                name="delivery_status",
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("throttles", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("queue_name", sa.String(length=64), nullable=True),
        sa.Column("message_id", sa.String(length=64), nullable=True),
        sa.Column("provider", sa.String(length=50), nullable=True),
        sa.Column("provider_message_id", sa.String(length=255), nullable=True),
        sa.Column(
            "provider_response",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dead_lettered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.notification_id"],
            name=op.f("fk_notification_deliveries_notification_id_notifications"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("delivery_id", name=op.f("pk_notification_deliveries")),
        sa.UniqueConstraint(
            "notification_id", "channel", name="uq_notification_deliveries_channel"
        ),
    )
    op.create_index(
        "ix_notification_deliveries_lease",
        "notification_deliveries",
        ["status", "lease_expires_at"],
        unique=False,
    )
    op.create_index(
        "ix_notification_deliveries_message_id",
        "notification_deliveries",
        ["message_id"],
        unique=False,
    )
    op.create_table(
        "delivery_attempts",
        sa.Column(
            "attempt_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.Identity(always=False),
            nullable=False,
        ),
        sa.Column("delivery_id", sa.Uuid(), nullable=False),
        sa.Column("notification_id", sa.Uuid(), nullable=False),
        sa.Column(
            "channel",
            sa.Enum(
                "email",
                "sms",
                "push",
                "in_app",
                "webhook",
                name="notification_channel",
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("attempt_number", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=50), nullable=False),
        sa.Column("request_id", sa.String(length=255), nullable=True),
        sa.Column(
            "outcome",
            sa.Enum(
                "sent",
                "delivered",
                "retryable",
                "throttled",
                "permanent",
                "bad_address",
                name="attempt_outcome",
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column(
            "response",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["notification_deliveries.delivery_id"],
            name=op.f("fk_delivery_attempts_delivery_id_notification_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("attempt_id", name=op.f("pk_delivery_attempts")),
    )
    op.create_index(
        "ix_delivery_attempts_delivery", "delivery_attempts", ["delivery_id"], unique=False
    )
    op.create_index(
        "ix_delivery_attempts_notification", "delivery_attempts", ["notification_id"], unique=False
    )
    if postgres:
        op.execute(
            f"ALTER TABLE real_time_events ALTER COLUMN sequence_number "
            f"SET DEFAULT nextval('{EVENT_SEQUENCE}')"
        )
        op.execute(f"ALTER SEQUENCE {EVENT_SEQUENCE} OWNED BY real_time_events.sequence_number")
        op.execute(NOTIFY_FUNCTION)
        op.execute(NOTIFY_TRIGGER)
        if context.config.attributes["platform_foreign_keys"]:
            _create_platform_foreign_keys()
    _seed_templates()


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        _drop_platform_foreign_keys()
        op.execute("DROP TRIGGER IF EXISTS clarion_notifications_inserted ON notifications")
        op.execute("DROP FUNCTION IF EXISTS clarion_notify_new_notification()")
    op.drop_index("ix_delivery_attempts_notification", table_name="delivery_attempts")
    op.drop_index("ix_delivery_attempts_delivery", table_name="delivery_attempts")
    op.drop_table("delivery_attempts")
    op.drop_index("ix_notification_deliveries_message_id", table_name="notification_deliveries")
    op.drop_index("ix_notification_deliveries_lease", table_name="notification_deliveries")
    op.drop_table("notification_deliveries")
    op.drop_index("ix_notifications_item_id", table_name="notifications")
    op.drop_index("ix_notifications_idempotency_key", table_name="notifications")
    op.drop_index(
        "ix_notifications_due",
        table_name="notifications",
        postgresql_where=sa.text("status = 'pending' AND dispatched_at IS NULL"),
        sqlite_where=sa.text("status = 'pending' AND dispatched_at IS NULL"),
    )
    op.drop_index("ix_notifications_bid_id", table_name="notifications")
    op.drop_index("idx_notifications_user", table_name="notifications")
    op.drop_index("idx_notifications_type", table_name="notifications")
    op.drop_index("idx_notifications_time", table_name="notifications")
    op.drop_index("idx_notifications_status", table_name="notifications")
    op.drop_index("idx_notifications_scheduled", table_name="notifications")
    op.drop_index("idx_notifications_read", table_name="notifications")
    op.drop_index("idx_notifications_priority", table_name="notifications")
    op.drop_index("idx_notifications_expiry", table_name="notifications")
    op.drop_index("idx_notifications_category", table_name="notifications")
    op.drop_index("idx_notifications_auction", table_name="notifications")
    op.drop_table("notifications")
    op.drop_index("idx_ws_connections_user", table_name="websocket_connections")
    op.drop_index("idx_ws_connections_time", table_name="websocket_connections")
    op.drop_index("idx_ws_connections_status", table_name="websocket_connections")
    op.drop_index("idx_ws_connections_socket", table_name="websocket_connections")
    op.drop_index("idx_ws_connections_session", table_name="websocket_connections")
    op.drop_index("idx_ws_connections_heartbeat", table_name="websocket_connections")
    op.drop_table("websocket_connections")
    op.drop_index("ix_user_addresses_user_channel", table_name="user_addresses")
    op.drop_table("user_addresses")
    op.drop_index("ix_real_time_events_item_id", table_name="real_time_events")
    op.drop_index("ix_real_time_events_bid_id", table_name="real_time_events")
    op.drop_index("idx_rt_events_visibility", table_name="real_time_events")
    op.drop_index("idx_rt_events_user", table_name="real_time_events")
    op.drop_index("idx_rt_events_type", table_name="real_time_events")
    op.drop_index("idx_rt_events_time", table_name="real_time_events")
    op.drop_index("idx_rt_events_sequence", table_name="real_time_events")
    op.drop_index("idx_rt_events_priority", table_name="real_time_events")
    op.drop_index("idx_rt_events_expiry", table_name="real_time_events")
    op.drop_index("idx_rt_events_correlation", table_name="real_time_events")
    op.drop_index("idx_rt_events_category", table_name="real_time_events")
    op.drop_index("idx_rt_events_auction", table_name="real_time_events")
    op.drop_table("real_time_events")
    op.drop_table("notification_templates")
    if postgres:
        op.execute(f"DROP SEQUENCE IF EXISTS {EVENT_SEQUENCE}")
        for name in ENUM_TYPES:
            op.execute(f"DROP TYPE IF EXISTS {name}")


def _fk_name(table: str, column: str, referred: str) -> str:
    return f"fk_{table}_{column}_{referred}"


def _create_platform_foreign_keys() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    missing = sorted({ref for _, _, ref, _ in PLATFORM_FOREIGN_KEYS} - existing)
    if missing:
        raise PlatformTablesMissing(
            "CLARION_PLATFORM_FOREIGN_KEYS is true but the platform's tables "
            f"{', '.join(missing)} do not exist in this database; create them first or "
            "set CLARION_PLATFORM_FOREIGN_KEYS=false (standalone)"
        )
    for table, column, referred, referred_column in PLATFORM_FOREIGN_KEYS:
        # NOT VALID would skip checking old rows; a new install has none, so validate.
        op.create_foreign_key(
            _fk_name(table, column, referred), table, referred, [column], [referred_column]
        )


def _drop_platform_foreign_keys() -> None:
    inspector = sa.inspect(op.get_bind())
    for table, column, referred, _ in PLATFORM_FOREIGN_KEYS:
        name = _fk_name(table, column, referred)
        if any(fk["name"] == name for fk in inspector.get_foreign_keys(table)):
            op.drop_constraint(name, table, type_="foreignkey")


def _seed_templates() -> None:
    """Insert :data:`SEED_TEMPLATES` into the table this revision just created."""
    bind = op.get_bind()
    now = dt.datetime.now(dt.UTC)
    rows = [
        {
            "template_id": uuid.uuid4(),
            "auction_type": auction_type,
            "event": event,
            "category": category,
            "title": title,
            "message": message,
            "priority": priority,
            "channels": list(channels),
            "body_format": body_format,
            "created_at": now,
            "updated_at": now,
        }
        for (
            auction_type,
            event,
            category,
            title,
            message,
            priority,
            channels,
            body_format,
        ) in SEED_TEMPLATES
    ]
    if bind.dialect.name == "postgresql":
        # The enum columns need a cast from the plain strings used here.
        stmt = sa.text(
            "INSERT INTO notification_templates (template_id, auction_type, event,"
            " category, title, message, priority, channels, body_format, created_at,"
            " updated_at) VALUES (:template_id, :auction_type, :event,"
            " CAST(:category AS notification_category), :title, :message,"
            " CAST(:priority AS notification_priority), CAST(:channels AS jsonb),"
            " :body_format, :created_at, :updated_at)"
            " ON CONFLICT (auction_type, event) DO NOTHING"
        ).bindparams(sa.bindparam("channels", type_=sa.JSON))
        bind.execute(stmt, rows)
    else:
        table = sa.table(
            "notification_templates",
            sa.column("template_id", sa.Uuid),
            sa.column("auction_type", sa.String),
            sa.column("event", sa.String),
            sa.column("category", sa.String),
            sa.column("title", sa.String),
            sa.column("message", sa.Text),
            sa.column("priority", sa.String),
            sa.column("channels", sa.JSON),
            sa.column("body_format", sa.String),
            sa.column("created_at", sa.DateTime(timezone=True)),
            sa.column("updated_at", sa.DateTime(timezone=True)),
        )
        bind.execute(table.insert(), rows)
