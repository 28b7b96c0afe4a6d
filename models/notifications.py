"""``notifications`` (the spec's table) and what delivery adds beside it.

Added beside the contract, never instead of it:

* ``notifications.idempotency_key`` and ``notifications.dispatched_at``;
* ``notification_templates``: the target of the spec's ``template_id``;
* ``user_addresses``: where a user is reached per channel;
* ``notification_deliveries``: one row per notification and channel, the
  state machine the workers move (queued -> sending -> sent/delivered/failed),
  with the token of its current take (``take_token``, revision 0002);
* ``delivery_attempts``: the history of every provider call;
* revision 0004: ``notification_templates.locale`` and ``.version``,
  ``email_layouts``, ``user_locales``, and on ``notifications`` what it was
  rendered with (``locale``, ``template_version``, ``email_layout_version``)
  and its rendered email (``email_html``, ``email_text``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clarion.core.clock import utcnow
from models.base import Base, INETType, JSONType, Timestamp, enum_type  # noqa: F401
from models.enums import (
    AttemptOutcome,
    Category,
    Channel,
    DeliveryStatus,
    NotificationStatus,
    Priority,
)

ChannelType = enum_type(Channel, "notification_channel")
CategoryType = enum_type(Category, "notification_category")
PriorityType = enum_type(Priority, "notification_priority")
StatusType = enum_type(NotificationStatus, "notification_status")
DeliveryStatusType = enum_type(DeliveryStatus, "delivery_status")
OutcomeType = enum_type(AttemptOutcome, "attempt_outcome")

# Parenthesised so that SQLite accepts the DDL too (the ORM always supplies ids there).
_uuid_default = sa.text("(gen_random_uuid())")


class NotificationTemplate(Base):
    """A reusable title and message, keyed by (auction_type, event).

    The spec's six auction events are seeded by the migrations; other auction
    types add theirs as rows, no code change needed.
    """

    __tablename__ = "notification_templates"

    template_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    auction_type: Mapped[str] = mapped_column(sa.String(50))
    event: Mapped[str] = mapped_column(sa.String(100))
    category: Mapped[Category] = mapped_column(CategoryType)
    title: Mapped[str] = mapped_column(sa.String(255))
    message: Mapped[str] = mapped_column(sa.Text)
    priority: Mapped[Priority] = mapped_column(PriorityType)
    channels: Mapped[list[str]] = mapped_column(JSONType)
    body_format: Mapped[str] = mapped_column(sa.String(10), server_default="text")
    #: BCP 47 (``en``, ``pt-BR``); the key is (auction_type, event, locale).
    locale: Mapped[str] = mapped_column(sa.String(35), server_default="en", default="en")
    #: Bumped by a trigger (PostgreSQL) whenever title, message or body_format change.
    version: Mapped[int] = mapped_column(sa.Integer, server_default="1", default=1)
    is_active: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.true(), default=True)
    created_at: Mapped[dt.datetime] = mapped_column(
        Timestamp, server_default=sa.func.current_timestamp(), default=utcnow
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        Timestamp, server_default=sa.func.current_timestamp(), default=utcnow, onupdate=utcnow
    )
    # --- the delivery policy (revision 0005) ------------------------------------
    #: Ignores opt-outs, quiet hours and the rate limit (won, payment due).
    required: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.false(), default=False)
    #: Further ones for the same user and auction within the window are folded.
    collapsible: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.false(), default=False)
    #: The collapse window of this template; NULL: CLARION_POLICY_COLLAPSE_WINDOW.
    collapse_window_seconds: Mapped[int | None] = mapped_column(sa.Integer)
    #: The follow-up's title and message: placeholders of the latest data, {count}, {more}.
    collapse_title: Mapped[str | None] = mapped_column(sa.String(255))
    collapse_message: Mapped[str | None] = mapped_column(sa.Text)

    __table_args__ = (
        sa.UniqueConstraint(
            "auction_type", "event", "locale", name="uq_notification_templates_key"
        ),
        sa.CheckConstraint("body_format IN ('text', 'html')", name="body_format"),
    )

    @property
    def key(self) -> str:
        return f"{self.auction_type}/{self.event}"


class EmailLayout(Base):
    """The frame of an email: Jinja2 sources for HTML and text, CSS, strings per locale.

    A new version of a layout is a new row; the highest active version of a
    name is the one used.
    """

    __tablename__ = "email_layouts"

    layout_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(sa.String(50))
    version: Mapped[int] = mapped_column(sa.Integer)
    html_template: Mapped[str] = mapped_column(sa.Text)
    text_template: Mapped[str] = mapped_column(sa.Text)
    css: Mapped[str] = mapped_column(sa.Text, server_default="", default="")
    #: ``{locale: {key: text}}``: the layout's own words (footer reason, link hint).
    strings: Mapped[dict[str, dict[str, str]]] = mapped_column(JSONType)
    is_active: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.true(), default=True)
    created_at: Mapped[dt.datetime] = mapped_column(
        Timestamp, server_default=sa.func.current_timestamp(), default=utcnow
    )

    __table_args__ = (sa.UniqueConstraint("name", "version", name="uq_email_layouts_name_version"),)


class UserLocale(Base):
    """A user's locale (BCP 47), beside their addresses: picks their templates."""

    __tablename__ = "user_locales"

    user_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    locale: Mapped[str] = mapped_column(sa.String(35))
    created_at: Mapped[dt.datetime] = mapped_column(
        Timestamp, server_default=sa.func.current_timestamp(), default=utcnow
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        Timestamp, server_default=sa.func.current_timestamp(), default=utcnow, onupdate=utcnow
    )


class Notification(Base):
    """The spec's ``notifications`` table, every column as specified."""

    __tablename__ = "notifications"

    notification_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid, primary_key=True, default=uuid.uuid4, server_default=_uuid_default
    )
    user_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    notification_type: Mapped[Channel] = mapped_column(ChannelType)
    category: Mapped[Category] = mapped_column(CategoryType)
    priority: Mapped[Priority] = mapped_column(PriorityType)
    auction_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    bid_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    item_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    title: Mapped[str] = mapped_column(sa.String(255))
    message: Mapped[str] = mapped_column(sa.Text)
    rich_content: Mapped[Any | None] = mapped_column(JSONType)
    action_url: Mapped[str | None] = mapped_column(sa.String(500))
    action_label: Mapped[str | None] = mapped_column(sa.String(100))
    template_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.Uuid, sa.ForeignKey("notification_templates.template_id")
    )
    template_data: Mapped[Any | None] = mapped_column(JSONType)
    delivery_channels: Mapped[list[str]] = mapped_column(JSONType)
    scheduled_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    sent_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    read_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    clicked_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    status: Mapped[NotificationStatus] = mapped_column(
        StatusType,
        server_default=NotificationStatus.PENDING.value,
        default=NotificationStatus.PENDING,
    )
    delivery_attempts: Mapped[int | None] = mapped_column(sa.Integer, server_default="0", default=0)
    max_attempts: Mapped[int | None] = mapped_column(sa.Integer, server_default="3", default=3)
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    provider_response: Mapped[Any | None] = mapped_column(JSONType)
    expires_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    is_read: Mapped[bool | None] = mapped_column(
        sa.Boolean, server_default=sa.false(), default=False
    )
    is_archived: Mapped[bool | None] = mapped_column(
        sa.Boolean, server_default=sa.false(), default=False
    )
    tags: Mapped[Any | None] = mapped_column(JSONType)
    # "metadata" is reserved on declarative classes: the attribute is
    # ``metadata_``, the column keeps the spec's name.
    metadata_: Mapped[Any | None] = mapped_column("metadata", JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(
        Timestamp, server_default=sa.func.current_timestamp(), default=utcnow
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        Timestamp, server_default=sa.func.current_timestamp(), default=utcnow, onupdate=utcnow
    )

    # --- beside the spec ------------------------------------------------------
    #: Caller's key: a second notify() with the same key returns the first row.
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(255))
    #: When a scheduler fanned the notification out into deliveries (its claim).
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    # What it was rendered with, and its email (revision 0004).
    locale: Mapped[str | None] = mapped_column(sa.String(35))
    template_version: Mapped[int | None] = mapped_column(sa.Integer)
    email_layout_version: Mapped[int | None] = mapped_column(sa.Integer)
    email_html: Mapped[str | None] = mapped_column(sa.Text)
    email_text: Mapped[str | None] = mapped_column(sa.Text)
    #: The caller's key for ``clarion.cancel(cancellation_key=...)`` (revision 0005).
    cancellation_key: Mapped[str | None] = mapped_column(sa.String(255))

    deliveries: Mapped[list[Delivery]] = relationship(
        back_populates="notification", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (
        sa.Index("idx_notifications_user", "user_id"),
        sa.Index("idx_notifications_type", "notification_type"),
        sa.Index("idx_notifications_category", "category"),
        sa.Index("idx_notifications_priority", "priority"),
        sa.Index("idx_notifications_status", "status"),
        sa.Index("idx_notifications_scheduled", "scheduled_at"),
        sa.Index("idx_notifications_read", "is_read"),
        sa.Index("idx_notifications_auction", "auction_id"),
        sa.Index("idx_notifications_time", "created_at"),
        sa.Index("idx_notifications_expiry", "expires_at"),
        # Not in the spec: the platform's columns stay indexed in standalone mode.
        sa.Index("ix_notifications_bid_id", "bid_id"),
        sa.Index("ix_notifications_item_id", "item_id"),
        sa.Index("ix_notifications_idempotency_key", "idempotency_key", unique=True),
        sa.Index(
            "ix_notifications_cancellation_key",
            "cancellation_key",
            postgresql_where=sa.text("cancellation_key IS NOT NULL"),
            sqlite_where=sa.text("cancellation_key IS NOT NULL"),
        ),
        # The scheduler's claim: only rows still waiting to be dispatched.
        sa.Index(
            "ix_notifications_due",
            "priority",
            "created_at",
            postgresql_where=sa.text("status = 'pending' AND dispatched_at IS NULL"),
            sqlite_where=sa.text("status = 'pending' AND dispatched_at IS NULL"),
        ),
        sa.CheckConstraint("max_attempts >= 1", name="max_attempts_positive"),
    )


class UserAddress(Base):
    """Where a user is reached on one channel: an email, an E.164 number, an
    FCM device token, or a webhook endpoint with its signing secret."""

    __tablename__ = "user_addresses"

    address_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid, primary_key=True, default=uuid.uuid4, server_default=_uuid_default
    )
    user_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    channel: Mapped[Channel] = mapped_column(ChannelType)
    address: Mapped[str] = mapped_column(sa.String(2048))
    #: Webhook signing secret (Standard Webhooks ``whsec_...``); never logged.
    secret: Mapped[str | None] = mapped_column(sa.String(255))
    label: Mapped[str | None] = mapped_column(sa.String(100))
    is_active: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.true(), default=True)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    disabled_reason: Mapped[str | None] = mapped_column(sa.String(255))
    created_at: Mapped[dt.datetime] = mapped_column(
        Timestamp, server_default=sa.func.current_timestamp(), default=utcnow
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        Timestamp, server_default=sa.func.current_timestamp(), default=utcnow, onupdate=utcnow
    )

    __table_args__ = (
        sa.UniqueConstraint("user_id", "channel", "address", name="uq_user_addresses_address"),
        sa.Index("ix_user_addresses_user_channel", "user_id", "channel"),
    )


class Delivery(Base):
    """One notification through one channel: the unit the workers deliver."""

    __tablename__ = "notification_deliveries"

    delivery_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid, primary_key=True, default=uuid.uuid4, server_default=_uuid_default
    )
    notification_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid, sa.ForeignKey("notifications.notification_id", ondelete="CASCADE")
    )
    channel: Mapped[Channel] = mapped_column(ChannelType)
    status: Mapped[DeliveryStatus] = mapped_column(DeliveryStatusType)
    #: Provider calls made for this delivery that counted against max_attempts.
    attempts: Mapped[int] = mapped_column(sa.Integer, server_default="0", default=0)
    #: Throttled answers (429): they wait for Retry-After and do not burn attempts.
    throttles: Mapped[int] = mapped_column(sa.Integer, server_default="0", default=0)
    #: A claim with no outcome by then is enqueued again by the scheduler.
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    #: Names the current take (queued -> sending) of this delivery; the
    #: write-back applies only while it still matches and clears it, so a
    #: write-back replayed after a lost commit acknowledgement changes nothing.
    take_token: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    queue_name: Mapped[str | None] = mapped_column(sa.String(64))
    message_id: Mapped[str | None] = mapped_column(sa.String(64))
    provider: Mapped[str | None] = mapped_column(sa.String(50))
    provider_message_id: Mapped[str | None] = mapped_column(sa.String(255))
    provider_response: Mapped[Any | None] = mapped_column(JSONType)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    queued_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    sent_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    failed_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    dead_lettered_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    # --- the delivery policy (revision 0005) ------------------------------------
    #: Held by the policy (quiet hours, rate limit, collapse follow-up): queued,
    #: no message yet; the scheduler enqueues it then and clears this.
    held_until: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    #: Why the policy held, skipped or folded this channel (kept after release).
    policy_reason: Mapped[str | None] = mapped_column(sa.Text)
    #: The notification whose follow-up carried this folded one.
    folded_into: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    created_at: Mapped[dt.datetime] = mapped_column(
        Timestamp, server_default=sa.func.current_timestamp(), default=utcnow
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        Timestamp, server_default=sa.func.current_timestamp(), default=utcnow, onupdate=utcnow
    )

    notification: Mapped[Notification] = relationship(back_populates="deliveries")
    attempt_history: Mapped[list[DeliveryAttempt]] = relationship(
        back_populates="delivery",
        order_by="DeliveryAttempt.attempt_id",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    __table_args__ = (
        sa.UniqueConstraint(
            "notification_id", "channel", name="uq_notification_deliveries_channel"
        ),
        sa.Index("ix_notification_deliveries_lease", "status", "lease_expires_at"),
        sa.Index("ix_notification_deliveries_message_id", "message_id"),
        # ``clarion dlq list`` reads the newest dead letters from here: partial,
        # so it holds only the dead-lettered rows and costs the hot path nothing.
        sa.Index(
            "ix_notification_deliveries_dead_lettered",
            "dead_lettered_at",
            "delivery_id",
            postgresql_where=sa.text("dead_lettered_at IS NOT NULL"),
            sqlite_where=sa.text("dead_lettered_at IS NOT NULL"),
        ),
        sa.Index(
            "ix_notification_deliveries_held",
            "held_until",
            postgresql_where=sa.text("held_until IS NOT NULL"),
            sqlite_where=sa.text("held_until IS NOT NULL"),
        ),
        sa.Index("ix_notification_deliveries_folded_into", "folded_into"),
        # A provider's delivery report finds its delivery by this (models.receipts).
        sa.Index("ix_notification_deliveries_provider_message_id", "provider_message_id"),
    )


class DeliveryAttempt(Base):
    """One provider call: who, what it answered, how long it took."""

    __tablename__ = "delivery_attempts"

    attempt_id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"), sa.Identity(), primary_key=True
    )
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid, sa.ForeignKey("notification_deliveries.delivery_id", ondelete="CASCADE")
    )
    notification_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    channel: Mapped[Channel] = mapped_column(ChannelType)
    attempt_number: Mapped[int] = mapped_column(sa.Integer)
    provider: Mapped[str] = mapped_column(sa.String(50))
    request_id: Mapped[str | None] = mapped_column(sa.String(255))
    outcome: Mapped[AttemptOutcome] = mapped_column(OutcomeType)
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    response: Mapped[Any | None] = mapped_column(JSONType)
    started_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    duration_ms: Mapped[int] = mapped_column(sa.Integer)
    created_at: Mapped[dt.datetime] = mapped_column(
        Timestamp, server_default=sa.func.current_timestamp(), default=utcnow
    )

    delivery: Mapped[Delivery] = relationship(back_populates="attempt_history")

    __table_args__ = (
        sa.Index("ix_delivery_attempts_delivery", "delivery_id"),
        sa.Index("ix_delivery_attempts_notification", "notification_id"),
    )
