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
    from clarion.bulk import notify_many
    from clarion.core.errors import (
        ClarionError,
        MissingVariableError,
        NotFoundError,
        SettingsError,
        TemplateError,
        ValidationError,
    )
    from clarion.locales import get_locale, money, set_locale
    from clarion.policy import (
        cancel,
        clear_quiet_hours,
        get_preferences,
        opt_in,
        opt_out,
        set_quiet_hours,
        set_template_policy,
    )
    from realtime.outbox import publish_event

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    "notify": "clarion.api",
    "notify_many": "clarion.bulk",
    "add_address": "clarion.addresses",
    "disable_address": "clarion.addresses",
    "list_addresses": "clarion.addresses",
    "Address": "clarion.addresses",
    "publish_event": "realtime.outbox",
    "set_locale": "clarion.locales",
    "get_locale": "clarion.locales",
    "money": "clarion.locales",
    "cancel": "clarion.policy",
    "opt_out": "clarion.policy",
    "opt_in": "clarion.policy",
    "set_quiet_hours": "clarion.policy",
    "clear_quiet_hours": "clarion.policy",
    "get_preferences": "clarion.policy",
    "set_template_policy": "clarion.policy",
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
    "cancel",
    "clear_quiet_hours",
    "disable_address",
    "get_locale",
    "get_preferences",
    "list_addresses",
    "money",
    "notify",
    "notify_many",
    "opt_in",
    "opt_out",
    "publish_event",
    "set_locale",
    "set_quiet_hours",
    "set_template_policy",
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
