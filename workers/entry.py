"""The module ``clarion worker`` hands to Dramatiq: the broker and its actors.

Importing it sets the global broker from ``CLARION_BROKER_URL`` and declares
the delivery actors on it.
"""

from __future__ import annotations

import dramatiq

from clarion.core.logging import configure_logging
from clarion.core.settings import get_settings
from workers.actors import declare_actors
from workers.broker import make_broker
from workers.runtime import get_deliverer

settings = get_settings()
configure_logging(settings.log_level)
broker = make_broker(settings)
dramatiq.set_broker(broker)
actors = declare_actors(broker, get_deliverer)
