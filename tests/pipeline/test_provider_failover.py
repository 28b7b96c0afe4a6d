"""Email failover with real worker processes: SES answering 503 -> SMTP, the breaker
opens (new mail skips SES), and after the cool-down traffic returns to SES.

SES is the SES sandbox (real boto3), SMTP an aiosmtpd sandbox; the circuit
breaker lives in the test Redis, shared by the worker's processes.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from harness import CLARION, ROOT, Stack
from pipekit import Pipeline, Sandboxes, StackFactory

from channels.sandboxes.http import Fault
from channels.sandboxes.smtp import SMTPSandbox

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]

COOLDOWN = 12.0  # long enough for the second wave and `clarion status` on a loaded machine
OPEN_KEY = "clarion:breaker:ses:open_until"


@pytest.fixture
def smtp() -> Iterator[SMTPSandbox]:
    with SMTPSandbox() as server:
        yield server


@pytest.fixture
def failover_stack(
    stacks: StackFactory, smtp: SMTPSandbox, sandboxes: Sandboxes
) -> Iterator[Stack]:
    sandboxes.ses.reset()
    stack = stacks(
        "failover",
        CLARION_EMAIL_PROVIDERS="ses,smtp",
        CLARION_SMTP_HOST=smtp.host,
        CLARION_SMTP_PORT=str(smtp.port),
        CLARION_BREAKER_THRESHOLD="3",
        CLARION_BREAKER_WINDOW="60",
        CLARION_BREAKER_COOLDOWN=str(COOLDOWN),
        # Every retryable failure burns an attempt: the failover is what saves the mail.
        CLARION_OUTAGE_THRESHOLD="0",
    )
    stack.worker(processes=2, threads=4)
    stack.scheduler()
    stack.wait_ready()
    yield stack
    sandboxes.ses.reset()


def providers(pl: Pipeline, notification_id: uuid.UUID) -> list[tuple[str, str]]:
    delivery = pl.deliveries(notification_id)["email"]
    return [(a.provider, str(a.outcome.value)) for a in pl.attempts(delivery.delivery_id)]


def wave(pl: Pipeline, count: int) -> list[uuid.UUID]:
    ids = [pl.notify(pl.user(email=True), ["email"]) for _ in range(count)]
    for nid in ids:
        _, rows = pl.wait_final(nid, 1, timeout=30)
        assert rows["email"].status == "sent", rows["email"].last_error
    return ids


def test_ses_down_fails_over_to_smtp_opens_the_breaker_and_recovers(
    failover_stack: Stack,
    pl: Pipeline,
    sandboxes: Sandboxes,
    smtp: SMTPSandbox,
    redis_client: redis.Redis,
) -> None:
    pl.warm_up("email")
    assert redis_client.get(OPEN_KEY) is None
    sandboxes.ses.fail(Fault(status=503, body={"message": "Service Unavailable"}), times=10_000)

    # SES answers 503: each mail's next attempt goes out through SMTP.
    first = wave(pl, 4)
    for nid in first:
        assert providers(pl, nid)[-1] == ("smtp", "sent")
    assert any(("ses", "retryable") in providers(pl, nid) for nid in first)
    assert redis_client.get(OPEN_KEY) is not None  # the breaker is open
    ses_calls = len(sandboxes.ses.requests_to("/outbound-emails"))

    # While it is open, new mail skips SES altogether.
    second = wave(pl, 3)
    for nid in second:
        assert providers(pl, nid) == [("smtp", "sent")]
    assert len(sandboxes.ses.requests_to("/outbound-emails")) == ses_calls
    status = subprocess.run(
        [CLARION, "status", "--json"],
        env=failover_stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)["providers"]
    assert report["ses"]["breaker"] in ("open", "half_open")  # not closed; the cool-down runs
    assert report["smtp"]["attempts"]["sent"] >= 7
    assert report["ses"]["attempts"]["retryable"] >= 3

    # SES recovers; after the cool-down a probe goes to SES and traffic returns.
    until = float(redis_client.get(OPEN_KEY) or 0)
    sandboxes.ses.clear_faults()
    back: list[uuid.UUID] = []

    def returned() -> bool:
        [nid] = wave(pl, 1)
        back.append(nid)
        return providers(pl, nid) == [("ses", "sent")]

    pl.wait_until(returned, timeout=COOLDOWN + 20, what="mail to go through SES again")
    assert time.time() >= until  # not before the cool-down ended
    assert all(providers(pl, nid) == [("smtp", "sent")] for nid in back[:-1])
    assert redis_client.get(OPEN_KEY) is None  # closed again
    after = wave(pl, 3)
    for nid in after:
        assert providers(pl, nid) == [("ses", "sent")]
    smtp_count = len(smtp.messages)
    assert smtp_count == len(first) + len(second) + len(back) - 1
