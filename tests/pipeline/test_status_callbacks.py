"""Clarion's own status callbacks to the platform, with real scheduler, worker and
``clarion web`` processes.

The platform's endpoint is a local receiver that verifies every request with the
``standardwebhooks`` library (as a platform would) and answers 401 to anything
that does not verify. It can fail first (503: retried with backoff, the same
``webhook-id``) and can hold a request (the worker is killed while posting: the
outbox row written with the outcome is relayed again, nothing is lost).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from harness import Stack
from pipekit import Pipeline, StackFactory, new_webhook_secret
from sqlalchemy.engine import Engine
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from twilio.request_validator import RequestValidator
from webkit import start_web

from channels.sandboxes.http import Fault, HTTPSandbox, RecordedRequest, Response

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]

PUBLIC = "https://notify.example.test"
PATH = "/platform/clarion-status"


class PlatformReceiver(HTTPSandbox):
    """The platform's endpoint: verifies with standardwebhooks, keeps what verified."""

    name = "platform"

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret
        self.verified: list[tuple[str, dict[str, Any]]] = []
        self.refused = 0
        #: While set, the next request is held (not answered) until ``release``.
        self.hold_next = threading.Event()
        self.holding = threading.Event()
        self.release = threading.Event()

    def handle(self, request: RecordedRequest) -> Response:
        if self.hold_next.is_set():
            self.hold_next.clear()
            self.holding.set()
            self.release.wait(60)
            return Response(200, {"ok": True})
        try:
            payload = Webhook(self.secret).verify(request.body, request.headers)
        except WebhookVerificationError:
            with self._lock:
                self.refused += 1
            return Response(401, {"error": "signature"})
        with self._lock:
            self.verified.append((request.headers["webhook-id"], payload))
        return Response(200, {"ok": True})

    def events(self, notification_id: uuid.UUID) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return [
                (wid, p)
                for wid, p in self.verified
                if p["data"]["notification_id"] == str(notification_id)
            ]


@pytest.fixture
def platform() -> Iterator[PlatformReceiver]:
    receiver = PlatformReceiver(new_webhook_secret())
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        receiver.stop()


def callback_stack(stacks: StackFactory, platform: PlatformReceiver, **extra: str) -> Stack:
    return stacks(
        "callbacks",
        CLARION_STATUS_CALLBACK_URL=platform.url + PATH,
        CLARION_STATUS_CALLBACK_SECRET=platform.secret,
        CLARION_PUBLIC_BASE_URL=PUBLIC,
        CLARION_TWILIO_STATUS_CALLBACK="true",
        **extra,
    )


def outbox(engine: Engine, notification_id: uuid.UUID) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT event_id, channel, event, state, attempts, last_error"
                    " FROM status_callbacks WHERE notification_id = :n ORDER BY created_at"
                ),
                {"n": notification_id},
            )
        )


def test_outcomes_and_later_receipts_are_called_back_signed_after_retries(
    stacks: StackFactory,
    platform: PlatformReceiver,
    pl: Pipeline,
    engine: Engine,
    tmp_path: Path,
) -> None:
    stack = callback_stack(stacks, platform).start()
    # The platform is down for the first two requests: they are retried.
    platform.fail(Fault(status=503, body={"error": "maintenance"}), times=2)

    # email sent by SES, sms failed (the user has no number): two events.
    user = pl.user(email=True)
    first = pl.notify(user, ["email", "sms"])
    _, rows = pl.wait_final(first, 2)
    assert rows["email"].status == "sent" and rows["sms"].status == "failed"
    pl.wait_until(lambda: len(platform.events(first)) == 2, timeout=60, what="two callbacks")
    got = {p["data"]["channel"]: (wid, p) for wid, p in platform.events(first)}
    assert got["email"][1]["type"] == "delivery.sent"
    assert got["email"][1]["data"]["delivery_id"] == str(rows["email"].delivery_id)
    assert got["email"][1]["data"]["provider"] == "ses"
    assert got["email"][1]["data"]["provider_message_id"] == rows["email"].provider_message_id
    assert got["email"][1]["data"]["user_id"] == str(user.user_id)
    assert got["sms"][1]["type"] == "delivery.failed"
    assert got["sms"][1]["data"]["error"].startswith("no address")
    # The receiver answered; the worker records it just after.
    pl.wait_until(
        lambda: {r.state for r in outbox(engine, first)} == {"sent"}, timeout=30, what="sent"
    )
    rows_out = outbox(engine, first)
    # Each event's webhook-id is its event id, the same on the refused tries.
    assert {f"evt_{r.event_id.hex}" for r in rows_out} == {wid for wid, _ in got.values()}
    tries = [r.headers["webhook-id"] for r in platform.requests_to(PATH)]
    assert len(tries) == 4 and set(tries) == {wid for wid, _ in got.values()}
    assert sum(r.attempts for r in rows_out) == 4
    assert platform.refused == 0

    # Receipts arriving later through clarion web: delivered, then a bounce.
    web = start_web(stack.env, tmp_path)
    try:
        phone = pl.user(sms=True)
        ok, bounced = pl.notify(phone, ["sms"]), pl.notify(phone, ["sms"])
        sids = {}
        for nid in (ok, bounced):
            _, got_rows = pl.wait_final(nid, 1)
            assert got_rows["sms"].status == "sent"
            sids[nid] = got_rows["sms"].provider_message_id
        token = stack.env["CLARION_TWILIO_AUTH_TOKEN"]
        url = PUBLIC + "/receipts/twilio"
        with web.client() as client:
            for nid, status, code in ((ok, "delivered", None), (bounced, "undelivered", "30003")):
                params = {
                    "MessageSid": str(sids[nid]),
                    "MessageStatus": status,
                    "To": phone.sms or "",
                }
                if code:
                    params["ErrorCode"] = code
                signature = RequestValidator(token).compute_signature(url, params)
                answer = client.post(
                    "/receipts/twilio", data=params, headers={"X-Twilio-Signature": signature}
                )
                assert (answer.status_code, answer.text) == (200, "moved")
                # A duplicate receipt moves nothing and calls back nothing.
                again = client.post(
                    "/receipts/twilio", data=params, headers={"X-Twilio-Signature": signature}
                )
                assert again.text == "duplicate"
    finally:
        web.stop()

    def types(nid: uuid.UUID) -> list[str]:
        return sorted(p["type"] for _, p in platform.events(nid))

    pl.wait_until(
        lambda: (
            types(ok) == ["delivery.delivered", "delivery.sent"]
            and types(bounced) == ["delivery.bounced", "delivery.sent"]
        ),
        timeout=60,
        what="the receipts' callbacks",
    )
    [(_, late)] = [(w, p) for w, p in platform.events(bounced) if p["type"] == "delivery.bounced"]
    assert late["data"]["receipt"] == "undelivered"
    assert "30003" in late["data"]["error"]
    assert late["data"]["notification_status"] == "failed"
    assert len(outbox(engine, ok)) == 2 and len(outbox(engine, bounced)) == 2


def test_a_worker_killed_while_posting_loses_no_callback(
    stacks: StackFactory,
    platform: PlatformReceiver,
    pl: Pipeline,
    engine: Engine,
    redis_client: redis.Redis,
) -> None:
    # The lease after which the scheduler hands a callback out again: above the
    # provider timeout (5 s), short enough for a test.
    stack = callback_stack(stacks, platform, CLARION_STATUS_CALLBACK_LEASE_SECONDS="8").start()
    platform.hold_next.set()
    user = pl.user(email=True)
    nid = pl.notify(user, ["email"])
    _, rows = pl.wait_final(nid, 1)
    assert rows["email"].status == "sent"
    # The write-back committed; the worker is posting the callback: kill it there.
    assert platform.holding.wait(60), stack.logs()
    worker = next(p for p in stack.processes if p.name.startswith("worker"))
    os.killpg(worker.popen.pid, signal.SIGKILL)
    worker.popen.wait()
    # Its process group is gone: the stack's readiness and stop must not count it.
    stack.processes.remove(worker)
    platform.release.set()
    [row] = outbox(engine, nid)
    assert row.state == "pending"  # the post never finished

    # Another worker: the scheduler relays the callback again once its lease ran out.
    stack.worker()
    stack.wait_ready()
    pl.wait_until(lambda: len(platform.events(nid)) == 1, timeout=60, what="the callback")
    [(wid, payload)] = platform.events(nid)
    assert wid == f"evt_{row.event_id.hex}"
    assert payload["type"] == "delivery.sent"
    pl.wait_until(lambda: outbox(engine, nid)[0].state == "sent", timeout=30, what="sent")
    assert json.loads(platform.requests_to(PATH)[-1].body)["data"]["event_id"] == str(row.event_id)
