"""The module ``clarion worker`` hands to Dramatiq: the broker and its actors.

Importing it sets the global broker from ``CLARION_BROKER_URL`` and declares
the delivery actors on it. Dramatiq imports it in each worker process, after
the fork: the process closes its copy of the metrics endpoint's socket (only
the exposition process answers) and counts dead letters and errors
(:class:`~workers.metrics.WorkerMetrics`).
"""

from __future__ import annotations

import logging

import dramatiq

from clarion.core.logging import configure_logging
from clarion.core.settings import get_settings, safe_url
from workers.actors import declare_actors
from workers.broker import make_broker
from workers.callbacks import declare_callback_actor, get_sender
from workers.exposition import close_inherited_listener
from workers.metrics import WorkerMetrics
from workers.runtime import get_deliverer

settings = get_settings()
configure_logging(settings.log_level)
logging.getLogger("workers").info(
    "worker: database %s, broker %s",
    safe_url(settings.effective_database_url),
    safe_url(settings.broker_url),
)
close_inherited_listener()
broker = make_broker(settings)
broker.add_middleware(WorkerMetrics())
dramatiq.set_broker(broker)
actors = declare_actors(broker, get_deliverer)
callback_actor = declare_callback_actor(broker, get_sender)
