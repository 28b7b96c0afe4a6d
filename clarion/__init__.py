"""Clarion: notification delivery for auction platforms.

Application code calls :func:`notify` inside its own transaction; the
scheduler and the workers do the rest.
"""

from clarion.api import notify
from clarion.errors import (
    ClarionError,
    MissingVariableError,
    NotFoundError,
    SettingsError,
    TemplateError,
    ValidationError,
)
from clarion.events import publish_event

__version__ = "0.1.0"

__all__ = [
    "ClarionError",
    "MissingVariableError",
    "NotFoundError",
    "SettingsError",
    "TemplateError",
    "ValidationError",
    "notify",
    "publish_event",
]
