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
    Notification,
    NotificationTemplate,
    UserAddress,
)
from models.preferences import CollapseWindow, RateCounter, UserOptOut, UserQuietHours
from models.realtime import RealTimeEvent, WebSocketConnection

metadata = Base.metadata

__all__ = [
    "PLATFORM_TABLES",
    "AttemptOutcome",
    "Base",
    "Category",
    "Channel",
    "CollapseWindow",
    "ConnectionStatus",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryStatus",
    "EventCategory",
    "EventPriority",
    "Notification",
    "NotificationStatus",
    "NotificationTemplate",
    "Priority",
    "RateCounter",
    "RealTimeEvent",
    "UserAddress",
    "UserOptOut",
    "UserQuietHours",
    "Visibility",
    "WebSocketConnection",
    "metadata",
]
