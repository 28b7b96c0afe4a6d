"""SMS failover with real worker processes: the first Twilio account answering 503
fails over to the backup account, the breaker opens (new SMS skip the first account),
traffic returns after the cool-down, and a permanent error never fails over.

Both accounts are answered by the Twilio sandbox (the real twilio SDK); the fault
hits one account's path only. The circuit breaker lives in the test Redis.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from harness import Stack
from pipekit import Pipeline, Sandboxes, StackFactory

from channels.sandboxes.http import Fault

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]

COOLDOWN = 10.0
OPEN_KEY = "clarion:breaker:twilio:open_until"
BACKUP_FROM = "+15005550009"


@pytest.fixture
def backup(sandboxes: Sandboxes) -> tuple[str, str]:
    return sandboxes.twilio.add_account()


@pytest.fixture
def sms_stack(
    stacks: StackFactory, sandboxes: Sandboxes, backup: tuple[str, str]
) -> Iterator[Stack]:
    sandboxes.twilio.reset()
    sid, token = backup
    stack = stacks(
        "smsfailover",
        CLARION_SMS_PROVIDERS="twilio,twilio_backup",
        CLARION_TWILIO_BACKUP_ACCOUNT_SID=sid,
        CLARION_TWILIO_BACKUP_AUTH_TOKEN=token,
        CLARION_TWILIO_BACKUP_FROM=BACKUP_FROM,
        CLARION_BREAKER_THRESHOLD="3",
        CLARION_BREAKER_WINDOW="60",
        CLARION_BREAKER_COOLDOWN=str(COOLDOWN),
        # Every retryable failure burns an attempt: the failover is what saves the SMS.
        CLARION_OUTAGE_THRESHOLD="0",
    )
    stack.worker(processes=2, threads=4)
    stack.scheduler()
    stack.wait_ready()
    yield stack
    sandboxes.twilio.reset()


def providers(pl: Pipeline, notification_id: uuid.UUID) -> list[tuple[str, str]]:
    delivery = pl.deliveries(notification_id)["sms"]
    return [(a.provider, str(a.outcome.value)) for a in pl.attempts(delivery.delivery_id)]


def wave(pl: Pipeline, count: int) -> list[uuid.UUID]:
    ids = [pl.notify(pl.user(sms=True), ["sms"]) for _ in range(count)]
    for nid in ids:
        _, rows = pl.wait_final(nid, 1, timeout=30)
        assert rows["sms"].status == "sent", rows["sms"].last_error
    return ids


def test_first_account_down_fails_over_to_the_backup_and_recovers(
    sms_stack: Stack,
    pl: Pipeline,
    sandboxes: Sandboxes,
    backup: tuple[str, str],
    redis_client: redis.Redis,
) -> None:
    twilio = sandboxes.twilio
    primary_path = f"/Accounts/{twilio.account_sid}/"
    backup_path = f"/Accounts/{backup[0]}/"
    pl.warm_up("sms")
    assert redis_client.get(OPEN_KEY) is None
    warmed = len(twilio.sent)
    twilio.fail(Fault(status=503, path_contains=primary_path), times=10_000)

    first = wave(pl, 4)
    for nid in first:
        assert providers(pl, nid)[-1] == ("twilio_backup", "sent")
    assert any(("twilio", "retryable") in providers(pl, nid) for nid in first)
    assert redis_client.get(OPEN_KEY) is not None  # the first account's breaker is open
    # The backup sent them from its own number.
    assert {form["From"] for form in twilio.sent[warmed:]} == {BACKUP_FROM}
    primary_calls = len(twilio.requests_to(primary_path))

    # While it is open, new SMS skip the first account altogether.
    second = wave(pl, 3)
    for nid in second:
        assert providers(pl, nid) == [("twilio_backup", "sent")]
    assert len(twilio.requests_to(primary_path)) == primary_calls

    # The first account recovers; after the cool-down traffic returns to it.
    until = float(redis_client.get(OPEN_KEY) or 0)
    twilio.clear_faults()
    back: list[uuid.UUID] = []

    def returned() -> bool:
        [nid] = wave(pl, 1)
        back.append(nid)
        return providers(pl, nid) == [("twilio", "sent")]

    pl.wait_until(returned, timeout=COOLDOWN + 20, what="SMS through the first account again")
    assert time.time() >= until
    assert redis_client.get(OPEN_KEY) is None
    assert len(twilio.requests_to(backup_path)) == len(first) + len(second) + len(back) - 1


def test_a_permanent_error_never_fails_over(
    sms_stack: Stack, pl: Pipeline, sandboxes: Sandboxes, backup: tuple[str, str]
) -> None:
    twilio = sandboxes.twilio
    pl.warm_up("sms")
    landline = pl.user(sms=True)
    twilio.block(landline.sms or "", 21614)  # not a mobile number: a bad address
    region = pl.user(sms=True)
    twilio.block(region.sms or "", 21408)  # region not enabled: permanent
    for user in (landline, region):
        nid = pl.notify(user, ["sms"])
        _, rows = pl.wait_final(nid, 1, timeout=30)
        assert rows["sms"].status == "failed"
        assert [p for p, _ in providers(pl, nid)] == ["twilio"]
    assert twilio.requests_to(f"/Accounts/{backup[0]}/") == []
