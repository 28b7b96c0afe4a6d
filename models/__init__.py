"""Clarion's tables (SQLAlchemy 2 declarative models) and enumerations."""

from models.base import PLATFORM_TABLES, Base
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
from models.notifications import (
    Delivery,
    DeliveryAttempt,
    EmailLayout,
    Notification,
    NotificationTemplate,
    UserAddress,
    UserLocale,
)
from models.realtime import RealTimeEvent, WebSocketConnection

metadata = Base.metadata

__all__ = [
    "PLATFORM_TABLES",
    "AttemptOutcome",
    "Base",
    "Category",
    "Channel",
    "ConnectionStatus",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryStatus",
    "EmailLayout",
    "EventCategory",
    "EventPriority",
    "Notification",
    "NotificationStatus",
    "NotificationTemplate",
    "Priority",
    "RealTimeEvent",
    "UserAddress",
    "UserLocale",
    "Visibility",
    "WebSocketConnection",
    "metadata",
]
