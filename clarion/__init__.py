"""Clarion: notification delivery for auction platforms.

Application code calls :func:`notify` inside its own transaction, and
:func:`publish_event` for the real-time stream; the scheduler and the
workers do the rest.

The names below are loaded on first use (PEP 562), so that importing the
ground (``clarion.core``) or any one part of Clarion does not load the
public API and everything it needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clarion.addresses import Address, add_address, disable_address, list_addresses
    from clarion.api import notify
    from clarion.core.errors import (
        ClarionError,
        MissingVariableError,
        NotFoundError,
        SettingsError,
        TemplateError,
        ValidationError,
    )
    from clarion.locales import get_locale, money, set_locale
    from realtime.outbox import publish_event

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    "notify": "clarion.api",
    "add_address": "clarion.addresses",
    "disable_address": "clarion.addresses",
    "list_addresses": "clarion.addresses",
    "Address": "clarion.addresses",
    "publish_event": "realtime.outbox",
    "set_locale": "clarion.locales",
    "get_locale": "clarion.locales",
    "money": "clarion.locales",
    "ClarionError": "clarion.core.errors",
    "MissingVariableError": "clarion.core.errors",
    "NotFoundError": "clarion.core.errors",
    "SettingsError": "clarion.core.errors",
    "TemplateError": "clarion.core.errors",
    "ValidationError": "clarion.core.errors",
}

__all__ = [
    "Address",
    "ClarionError",
    "MissingVariableError",
    "NotFoundError",
    "SettingsError",
    "TemplateError",
    "ValidationError",
    "add_address",
    "disable_address",
    "get_locale",
    "list_addresses",
    "money",
    "notify",
    "publish_event",
    "set_locale",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'clarion' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
