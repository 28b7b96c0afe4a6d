"""The enumerations of the schema contract, with the spec's values exactly.

PostgreSQL orders an enum by declaration order, so ``Priority`` is declared
from lowest to highest and ``ORDER BY priority DESC`` puts urgent first.
"""

from __future__ import annotations

import enum


class Channel(enum.StrEnum):
    """``notifications.notification_type``: the channels a notification can go out on."""

    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    IN_APP = "in_app"
    WEBHOOK = "webhook"


class Category(enum.StrEnum):
    AUCTION = "auction"
    BID = "bid"
    PAYMENT = "payment"
    SYSTEM = "system"
    MARKETING = "marketing"


class Priority(enum.StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"

    @property
    def rank(self) -> int:
        """0 for low up to 3 for urgent."""
        return list(Priority).index(self)


class NotificationStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    CLICKED = "clicked"
    FAILED = "failed"
    CANCELLED = "cancelled"


class DeliveryStatus(enum.StrEnum):
    """State of one channel of one notification (``notification_deliveries``).

    queued -> sending -> sent | delivered | failed, and back to queued for a
    retry. ``cancelled`` ends a delivery that will never be attempted.
    """

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: Deliveries still on their way: queued for a worker or being sent. The
#: roll-up keeps their notification pending; the lease sweep requeues them.
IN_FLIGHT = (DeliveryStatus.QUEUED, DeliveryStatus.SENDING)


class AttemptOutcome(enum.StrEnum):
    """Outcome of one provider call, as recorded in ``delivery_attempts``."""

    SENT = "sent"
    DELIVERED = "delivered"
    RETRYABLE = "retryable"
    THROTTLED = "throttled"
    PERMANENT = "permanent"
    BAD_ADDRESS = "bad_address"


class ConnectionStatus(enum.StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTING = "disconnecting"
    DISCONNECTED = "disconnected"


class EventCategory(enum.StrEnum):
    AUCTION = "auction"
    BID = "bid"
    USER = "user"
    SYSTEM = "system"
    NOTIFICATION = "notification"


class EventPriority(enum.StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"


class Visibility(enum.StrEnum):
    PUBLIC = "public"
    AUTHENTICATED = "authenticated"
    PRIVATE = "private"
    TARGETED = "targeted"
