"""Clarion's status callbacks to the platform: post one, decide what next.

The scheduler relays each pending ``status_callbacks`` row (:mod:`models.callbacks`)
to the ``status_callbacks`` queue; the actor here posts it to
``CLARION_STATUS_CALLBACK_URL`` with the webhook channel's own code
(:meth:`channels.webhook.WebhookProvider.post`: Standard Webhooks signature,
timeouts, no redirects) and the same pure retry decision as deliveries
(:func:`workers.retry_policy.decide`): 2xx ends it ``sent``; 408, 429, 5xx and
network errors retry with backoff (429/503 honour Retry-After) through
``dramatiq.Retry``; any other answer, or attempts running out, ends it
``failed`` and dead-letters the message. The body::

    {"type": "delivery.delivered", "timestamp": "...Z",
     "data": {"event_id": ..., "event": "delivered", "notification_id": ...,
              "delivery_id": ..., "channel": "email", "user_id": ..., ...}}

``webhook-id`` is ``evt_<event_id>`` on every try: receivers deduplicate on it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable

import dramatiq

from channels.base import ChannelError, RetryableError
from channels.webhook import WebhookProvider
from clarion.core.settings import Settings
from models.callbacks import CallbackOutbox, CallbackState, PendingCallback
from workers.delivery import Outcome, Result
from workers.retry_policy import Action, RetryPolicy, decide

log = logging.getLogger("clarion.callbacks")

QUEUE = "status_callbacks"
ACTOR = "send_status_callback"


class CallbackExhausted(Exception):
    """A status callback's attempts ran out: the message goes to the dead-letter queue."""


@dataclasses.dataclass
class CallbackSender:
    outbox: CallbackOutbox
    poster: WebhookProvider
    url: str
    secret: str | None
    policy: RetryPolicy
    max_attempts: int
    lease_seconds: float

    @staticmethod
    def body(callback: PendingCallback) -> bytes:
        payload = {
            "type": f"delivery.{callback.event}",
            "timestamp": _iso(callback.created_at),
            "data": callback.data,
        }
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()

    def send(self, event_id: uuid.UUID) -> Outcome:
        callback = self.outbox.load(event_id)
        if callback is None:
            log.info("status callback %s already sent or failed; message dropped", event_id)
            return Outcome(Result.DROPPED)
        try:
            self.poster.post(self.url, f"evt_{event_id.hex}", self.body(callback), self.secret)
        except ChannelError as exc:
            return self._failed(callback, exc)
        except Exception as exc:  # a bug or a new error: retried, bounded by max_attempts
            return self._failed(
                callback,
                RetryableError(f"unexpected {type(exc).__name__}", provider="webhook"),
            )
        self.outbox.finish(event_id, CallbackState.SENT)
        log.info(
            "status callback %s (%s, notification %s) sent",
            event_id,
            callback.event,
            callback.data["notification_id"],
        )
        return Outcome(Result.DELIVERED)

    def _failed(self, callback: PendingCallback, error: ChannelError) -> Outcome:
        attempts = callback.attempts + 1
        decision = decide(
            error,
            attempts=attempts,
            # Every try is counted in the row; as throttles too, so that a platform
            # answering 429 for ever is bounded by the policy's max_throttles.
            throttles=attempts,
            max_attempts=self.max_attempts,
            policy=self.policy,
        )
        text = f"{type(error).__name__}: {error}"
        if decision.action is Action.RETRY:
            self.outbox.finish(
                callback.event_id,
                CallbackState.PENDING,
                error=text,
                retry_in=decision.delay,
                lease_seconds=self.lease_seconds,
            )
            log.warning(
                "status callback %s: %s; retrying in %.1f s (attempt %d of %d)",
                callback.event_id,
                text,
                decision.delay,
                attempts,
                self.max_attempts,
            )
            return Outcome(Result.RETRY, delay_ms=decision.delay_ms, error=text)
        self.outbox.finish(callback.event_id, CallbackState.FAILED, error=text)
        log.warning("status callback %s failed: %s (%s)", callback.event_id, text, decision.reason)
        exhausted = decision.action is Action.EXHAUSTED
        return Outcome(Result.EXHAUSTED if exhausted else Result.FAILED, error=text)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def declare_callback_actor(
    broker: dramatiq.Broker, get_sender: Callable[[], CallbackSender | None]
) -> dramatiq.Actor[[str], None]:
    """The ``send_status_callback`` actor on the ``status_callbacks`` queue."""

    def send_status_callback(event_id: str) -> None:
        sender = get_sender()
        if sender is None:
            log.warning("status callback %s: CLARION_STATUS_CALLBACK_URL is unset", event_id)
            return
        outcome = sender.send(uuid.UUID(event_id))
        if outcome.result is Result.RETRY:
            raise dramatiq.Retry(delay=outcome.delay_ms)
        if outcome.result is Result.EXHAUSTED:
            raise CallbackExhausted(f"status callback {event_id}: attempts exhausted")

    def retry_when(retries: int, exc: BaseException) -> bool:
        if isinstance(exc, dramatiq.Retry):
            return True
        return not isinstance(exc, CallbackExhausted) and retries < 10

    actor: dramatiq.Actor[[str], None] = dramatiq.actor(
        actor_name=ACTOR,
        queue_name=QUEUE,
        broker=broker,
        retry_when=retry_when,
        throws=(CallbackExhausted,),
        time_limit=120_000,
    )(send_status_callback)
    return actor


# --- this process's sender ---------------------------------------------------------

_lock = threading.Lock()
_sender: CallbackSender | None = None
_pid: int | None = None


def build_sender(settings: Settings) -> CallbackSender | None:
    """The sender for ``settings``; None when ``CLARION_STATUS_CALLBACK_URL`` is unset."""
    if not settings.status_callback_url:
        return None
    from clarion.core.db import make_engine
    from workers.runtime import policy_from

    return CallbackSender(
        outbox=CallbackOutbox(make_engine(settings.effective_database_url)),
        # The URL is the operator's, not a tenant's: a private host is fine.
        poster=WebhookProvider(timeout=settings.provider_timeout, allow_private=True),
        url=settings.status_callback_url,
        secret=settings.status_callback_secret,
        policy=policy_from(settings),
        max_attempts=settings.status_callback_max_attempts,
        lease_seconds=settings.status_callback_lease_seconds,
    )


def get_sender() -> CallbackSender | None:
    """This process's sender (built after a fork, on first use)."""
    global _sender, _pid
    if _pid != os.getpid():
        with _lock:
            if _pid != os.getpid():
                from clarion.core.settings import get_settings

                _sender = build_sender(get_settings())
                _pid = os.getpid()
    return _sender
