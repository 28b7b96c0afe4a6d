"""The module ``clarion worker`` hands to Dramatiq: the broker and its actors.

Importing it sets the global broker from ``CLARION_BROKER_URL`` and declares
the delivery actors on it.
"""

from __future__ import annotations

import logging

import dramatiq

from clarion.core.logging import configure_logging
from clarion.core.settings import get_settings, safe_url
from workers.actors import declare_actors
from workers.broker import make_broker
from workers.runtime import get_deliverer

settings = get_settings()
configure_logging(settings.log_level)
logging.getLogger("workers").info(
    "worker: database %s, broker %s",
    safe_url(settings.effective_database_url),
    safe_url(settings.broker_url),
)
broker = make_broker(settings)
dramatiq.set_broker(broker)
actors = declare_actors(broker, get_deliverer)
