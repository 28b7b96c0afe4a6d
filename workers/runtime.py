"""Wiring: settings -> engine -> write-back store -> providers -> deliverer, once per process.

Worker processes are forked by Dramatiq after the module is imported, so the
engine and the provider clients are built on first use, in the child.
"""

from __future__ import annotations

import os
import threading

from channels.registry import Providers, failover_chains
from channels.unsubscribe import UnsubscribeLinks
from clarion.core.db import make_engine
from clarion.core.settings import Settings, get_settings
from models.callbacks import callback_events
from models.writeback import WriteBackStore
from workers.batching import GroupCommitter
from workers.breaker import Breaker
from workers.delivery import Deliverer
from workers.outage import OutageTracker
from workers.retry_policy import RetryPolicy
from workers.sending import Sender

_lock = threading.Lock()
_deliverer: Deliverer | None = None
_pid: int | None = None


def policy_from(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        min_backoff=settings.retry_min_backoff,
        max_backoff=settings.retry_max_backoff,
        max_retry_after=settings.max_retry_after,
        max_outage_wait=settings.outage_max_wait,
    )


def build_deliverer(settings: Settings, providers: Providers | None = None) -> Deliverer:
    # No pre-ping on the hot path: it costs a round trip per checkout, and the
    # deliverer retries a write on a dropped connection anyway.
    engine = make_engine(settings.effective_database_url, pool_pre_ping=False)
    return Deliverer(
        GroupCommitter(WriteBackStore(engine, callbacks=callback_events(settings))),
        providers or Providers(settings),
        policy=policy_from(settings),
        lease_seconds=settings.lease_seconds,
        queued_lease_seconds=settings.queued_lease_seconds,
        outages=OutageTracker(settings.outage_threshold),
        breaker=Breaker.from_url(
            settings.redis_url,
            threshold=settings.breaker_threshold,
            window=settings.breaker_window,
            cooldown=settings.breaker_cooldown,
        )
        if failover_chains(settings)
        else None,
        unsubscribe=UnsubscribeLinks(settings.public_base_url, settings.unsubscribe_secret)
        if settings.public_base_url and settings.unsubscribe_secret
        else None,
        sender=Sender(settings.send_concurrency),
    )


def get_deliverer() -> Deliverer:
    """This process's deliverer (rebuilt after a fork)."""
    global _deliverer, _pid
    if _deliverer is None or _pid != os.getpid():
        with _lock:
            if _deliverer is None or _pid != os.getpid():
                _deliverer = build_deliverer(get_settings())
                _pid = os.getpid()
    return _deliverer


def set_deliverer(deliverer: Deliverer | None) -> None:
    """Install a deliverer for this process (the embedded demo, tests)."""
    global _deliverer, _pid
    with _lock:
        _deliverer = deliverer
        _pid = os.getpid() if deliverer is not None else None
