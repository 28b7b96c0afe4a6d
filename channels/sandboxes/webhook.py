"""A webhook endpoint on 127.0.0.1 that records deliveries and checks signatures.

Usage::

    with WebhookReceiver(secret="whsec_...") as hook:
        provider.send(replace(message, to=hook.url + "/hooks/a", secret="whsec_..."))
        hook.deliveries[0].verified          # True: the signature matched
        hook.deliveries[0].payload["data"]
        hook.fail(Fault(status=410))         # the next POST answers 410 Gone

Every POST answers 200 unless a fault says otherwise. With ``secret`` each
delivery records whether its ``webhook-signature`` verified; with
``reject_unverified=True`` an unverified one is answered 401, the way a real
receiver would. ``latency=0.2`` delays every answer by 200 ms (the same knob as
``hook.latency``; ``reset()`` sets it back to 0).

The provider refuses loopback endpoints unless ``allow_private=True``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from channels.sandboxes.http import HTTPSandbox, RecordedRequest, Response
from channels.webhook import DEFAULT_TOLERANCE, verify


@dataclasses.dataclass(frozen=True)
class ReceivedWebhook:
    """One POST the receiver answered itself (not through a fault)."""

    request: RecordedRequest
    payload: Any
    #: None without a receiver secret; else whether the signature verified.
    verified: bool | None

    @property
    def webhook_id(self) -> str | None:
        return self.request.headers.get("webhook-id")


class WebhookReceiver(HTTPSandbox):
    """Answers webhook POSTs with 200 and keeps them in ``deliveries``."""

    name = "webhook"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        secret: str | None = None,
        reject_unverified: bool = False,
        tolerance: float = DEFAULT_TOLERANCE,
        latency: float = 0.0,
    ) -> None:
        if latency < 0:
            raise ValueError(f"latency must be >= 0 seconds, not {latency!r}")
        super().__init__(host, port)
        # A receiver as slow as a real one (a provider answering in 50-400 ms).
        self.latency = latency
        self.secret = secret
        self.reject_unverified = reject_unverified
        self.tolerance = tolerance
        self.deliveries: list[ReceivedWebhook] = []

    def __enter__(self) -> WebhookReceiver:
        self.start()
        return self

    def on_reset(self) -> None:
        # Called by reset() with the lock held.
        self.deliveries.clear()

    def handle(self, request: RecordedRequest) -> Response:
        if request.method != "POST":
            return Response(405, {"error": "POST only"}, {"Allow": "POST"})
        try:
            payload: Any = json.loads(request.body)
        except ValueError:
            payload = None
        verified: bool | None = None
        if self.secret is not None:
            verified = verify(
                self.secret,
                request.headers.get("webhook-id", ""),
                request.headers.get("webhook-timestamp", ""),
                request.body,
                request.headers.get("webhook-signature", ""),
                tolerance=self.tolerance,
            )
        with self._lock:
            self.deliveries.append(ReceivedWebhook(request, payload, verified))
        if verified is False and self.reject_unverified:
            return Response(401, {"error": "invalid signature"})
        return Response(200, {"ok": True})
