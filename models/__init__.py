"""Clarion's tables (SQLAlchemy 2 declarative models) and enumerations."""

from models.apikeys import ApiKey, Scope
from models.base import PLATFORM_TABLES, Base
from models.callbacks import StatusCallback
from models.enums import (
    AttemptOutcome,
    Category,
    Channel,
    ConnectionStatus,
    DeliveryStatus,
    EventCategory,
    EventPriority,
    NotificationStatus,
    Priority,
    Visibility,
)
from models.idempotency import IdempotencyRecord
from models.notifications import (
    Delivery,
    DeliveryAttempt,
    EmailLayout,
    Notification,
    NotificationTemplate,
    UserAddress,
    UserLocale,
)
from models.preferences import CollapseWindow, RateCounter, UserOptOut, UserQuietHours
from models.realtime import RealTimeEvent, WebSocketConnection
from models.receipts import ReceiptCount
from models.suppressions import Suppression
from models.unsubscribes import EmailUnsubscribe

metadata = Base.metadata

__all__ = [
    "PLATFORM_TABLES",
    "ApiKey",
    "AttemptOutcome",
    "Base",
    "Category",
    "Channel",
    "CollapseWindow",
    "ConnectionStatus",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryStatus",
    "EmailLayout",
    "EmailUnsubscribe",
    "EventCategory",
    "EventPriority",
    "IdempotencyRecord",
    "Notification",
    "NotificationStatus",
    "NotificationTemplate",
    "Priority",
    "RateCounter",
    "RealTimeEvent",
    "ReceiptCount",
    "Scope",
    "StatusCallback",
    "Suppression",
    "UserAddress",
    "UserLocale",
    "UserOptOut",
    "UserQuietHours",
    "Visibility",
    "WebSocketConnection",
    "metadata",
]
