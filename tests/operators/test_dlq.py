"""Dead letters driven by real failures through real processes, handled through the CLI.

One scenario per broker (the stack takes seconds to start, so the steps share it):
exhaust deliveries against failing sandboxes, list and filter them, show one,
requeue one, requeue a filtered set, purge one, interrupt a requeue after its
database step and finish it with ``requeue --all``; then check the rows, the
broker and the providers: every requeued delivery reached the provider once.
"""

from __future__ import annotations

import datetime as dt

import pytest
from harness import Stack, wait_until
from operators_support import BROKERS, Ops

from channels.sandboxes.http import Fault
from clarion.operators.deadletters import open_dead_letters, requeue_copy
from clarion.operators.dlq import DeadLetterOps, Filters
from models.deadletters import DeadLetterRows, RequeueStep

# Long scenarios of many real processes and CLI runs: the default 120 s guard
# against a hang is too close to their duration on a loaded machine.
pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(300)]


def dead_in_broker(ops: Ops) -> dict[str, str]:
    """message id -> delivery id of every dead letter, read straight from the broker."""
    with open_dead_letters(BROKERS[ops.broker]) as store:
        return {e.message_id: str(e.delivery_id) for e in store.entries()}


def test_dead_letters_list_show_requeue_purge(ops: Ops, stack: Stack) -> None:
    ops.farm.ses.fail(Fault(status=503), times=10_000)
    ops.farm.twilio.fail(Fault(status=503), times=10_000)
    stack.start()

    secret = "whsec_c2VjcmV0LW5ldmVyLXByaW50ZWQtYW55d2hlcmU="
    emails = [
        ops.notify(ops.user(webhook_secret=secret if i == 0 else None), ["email"]) for i in range(4)
    ]
    twice = ops.notify(ops.user(), ["email"], max_attempts=2)
    smses = [ops.notify(ops.user(email=False, sms=True), ["sms"]) for _ in range(2)]
    everything = [*emails, twice, *smses]
    for nid in everything:
        channel = "sms" if nid in smses else "email"
        row = ops.wait_status(nid, channel, "failed")
        assert row.dead_lettered_at is not None
    wait_until(
        lambda: len(dead_in_broker(ops)) == 7, timeout=20, what="7 dead letters in the broker"
    )

    # --- list: every dead letter, joined with its row, newest first ---------------------
    listed = ops.cli_json("dlq", "list")
    assert len(listed) == 7
    by_notification = {e["notification_id"]: e for e in listed}
    assert set(by_notification) == {str(n) for n in everything}
    row = ops.deliveries(twice)["email"]
    entry = by_notification[str(twice)]
    assert entry["delivery_id"] == str(row.delivery_id)
    assert entry["message_id"] == row.message_id
    assert entry["attempts"] == 2 and entry["max_attempts"] == 2
    assert (
        entry["last_error"] == row.last_error == "RetryableError: SES InternalFailure: injected 503"
    )
    assert entry["channel"] == "email" and entry["queue"] == "email"
    died = [e["died_at"] for e in listed]
    assert died == sorted(died, reverse=True)
    table = ops.cli("dlq", "list")
    assert table.returncode == 0 and "7 dead letters (database view" in table.stdout
    assert "database and broker agree: 7 dead letters" in table.stdout
    # The broker's own view: the same dead letters, read from the dead-letter queues.
    from_broker = ops.cli_json("dlq", "list", "--source", "broker")
    assert {e["source"] for e in listed} == {"database"}
    assert {e["source"] for e in from_broker} == {"broker"}
    same = ("message_id", "delivery_id", "queue", "actor", "notification_id", "last_error")
    assert sorted(tuple(e[k] for k in same) for e in from_broker) == sorted(
        tuple(e[k] for k in same) for e in listed
    )

    # --- filters --------------------------------------------------------------------------
    assert {e["notification_id"] for e in ops.cli_json("dlq", "list", "--channel", "sms")} == {
        str(n) for n in smses
    }
    assert len(ops.cli_json("dlq", "list", "--queue", "email")) == 5
    assert len(ops.cli_json("dlq", "list", "--error", "ses internalfailure")) == 5
    assert len(ops.cli_json("dlq", "list", "--limit", "3")) == 3
    assert len(ops.cli_json("dlq", "list", "--since", "10m")) == 7
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    assert ops.cli_json("dlq", "list", "--until", past) == []
    assert len(ops.cli_json("dlq", "list", env={"CLARION_DLQ_CHANNEL": "sms"})) == 2
    # The same filters over the broker's view.
    broker = ("--source", "broker")
    assert len(ops.cli_json("dlq", "list", *broker, "--channel", "sms")) == 2
    assert len(ops.cli_json("dlq", "list", *broker, "--error", "ses internalfailure")) == 5
    assert len(ops.cli_json("dlq", "list", *broker, "--limit", "3")) == 3
    assert ops.cli_json("dlq", "list", *broker, "--until", past) == []
    assert len(ops.cli_json("dlq", "list", env={"CLARION_DLQ_SOURCE": "broker"})) == 7

    # --- show -----------------------------------------------------------------------------
    [shown] = ops.cli_json("dlq", "show", entry["message_id"])
    assert shown["message"]["actor"] == "deliver_email"
    assert shown["message"]["args"] == [str(row.delivery_id)]
    assert shown["notification"]["notification_id"] == str(twice)
    assert shown["delivery"]["status"] == "failed"
    assert [a["outcome"] for a in shown["history"]] == ["retryable", "retryable"]
    assert ops.cli("dlq", "show", entry["delivery_id"]).returncode == 0

    # --- the provider recovers; requeue one ------------------------------------------------
    ops.farm.ses.reset()
    ops.farm.twilio.reset()
    done = ops.cli("dlq", "requeue", entry["message_id"])
    assert done.returncode == 0, done.stderr
    assert "requeued 1, skipped 0, failed 0" in done.stdout
    sent = ops.wait_status(twice, "email", "sent")
    assert sent.attempts == 1  # reset to 0 by the requeue, then one successful attempt
    assert sent.dead_lettered_at is None
    assert sent.message_id != entry["message_id"]
    assert ops.ses_requests(twice) == 1
    assert ops.notification(twice).status == "sent"
    assert entry["message_id"] not in dead_in_broker(ops)
    [shown] = ops.cli_json("dlq", "list", "--queue", "email", "--limit", "1")  # others remain
    assert shown["message_id"] != entry["message_id"]

    # --- requeue a filtered set ------------------------------------------------------------
    dry = ops.cli_json("dlq", "requeue", "--all", "--channel", "sms", "--dry-run")
    assert [r["result"] for r in dry[:-1]] == ["would_requeue"] * 2
    assert len(dead_in_broker(ops)) == 6
    result = ops.cli_json("dlq", "requeue", "--all", "--channel", "sms")
    assert result[-1] == {"dry_run": False, "requeued": 2, "skipped": 0, "failed": 0}
    for nid in smses:
        assert ops.wait_status(nid, "sms", "sent").attempts == 1

    # --- purge one (confirmation required) -------------------------------------------------
    purged_id = emails[3]
    purged_row = ops.deliveries(purged_id)["email"]
    refused = ops.cli("dlq", "purge", purged_row.message_id or "")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    done = ops.cli("dlq", "purge", str(purged_row.delivery_id), "--yes")
    assert done.returncode == 0, done.stderr
    assert "purged 1" in done.stdout
    after = ops.deliveries(purged_id)["email"]
    assert (after.status, after.last_error, after.dead_lettered_at) == ("failed", "purged", None)
    assert purged_row.message_id not in dead_in_broker(ops)
    [shown_purged] = ops.cli_json("inspect", str(purged_id))
    history = shown_purged["deliveries"][0]["history"]
    assert history[0]["error"] == "RetryableError: SES InternalFailure: injected 503"

    # --- an interrupted requeue: the database step of one, no broker step -------------------
    half = emails[0]
    with open_dead_letters(BROKERS[ops.broker]) as store:
        letters = DeadLetterOps(store, ops.sessions).select(Filters(queue="email"))
        [letter] = [e.letter for e in letters if e.delivery and e.delivery.notification_id == half]
        step = DeadLetterRows(ops.sessions).requeue_dead_letter(
            letter.delivery_id,  # type: ignore[arg-type]
            message_id=requeue_copy(letter).message_id,
            queue_name=letter.queue,
            lease_seconds=3600,
        )
    assert step is RequeueStep.REQUEUED
    assert ops.deliveries(half)["email"].status == "queued"
    remaining = dead_in_broker(ops)
    assert len(remaining) == 3  # emails 0, 1, 2: the half-done one is still a dead letter

    result = ops.cli_json("dlq", "requeue", "--all")
    assert result[-1] == {"dry_run": False, "requeued": 3, "skipped": 0, "failed": 0}
    reasons = {r["message_id"]: r["reason"] for r in result[:-1]}
    assert reasons[letter.message_id] == "finished an interrupted requeue"
    again = ops.cli_json("dlq", "requeue", "--all")
    assert again == [{"dry_run": False, "requeued": 0, "skipped": 0, "failed": 0}]
    for nid in emails[:3]:
        assert ops.wait_status(nid, "email", "sent").attempts == 1
    for nid in emails[:3]:
        assert ops.ses_requests(nid) == 1, f"{nid} was sent more than once after the requeue"
    assert dead_in_broker(ops) == {}
    assert ops.ses_requests(purged_id) == 0

    # --- inspect: masked addresses, no secret ----------------------------------------------
    shown_text = ops.cli("inspect", str(emails[0]))
    assert shown_text.returncode == 0
    [inspected] = ops.cli_json("inspect", str(emails[0]))
    for out in (shown_text.stdout, str(inspected)):
        assert secret not in out
        assert "bidder-" not in out  # the email address only masked
    masked = {a["channel"]: a["address"] for a in inspected["addresses"]}
    assert masked["email"].startswith("b***@example.com")
    assert masked["webhook"].endswith("/***")
    assert inspected["deliveries"][0]["status"] == "sent"
    assert [a["outcome"] for a in inspected["deliveries"][0]["history"]] == ["retryable", "sent"]
    assert inspected["notification"]["status"] == "sent"


def test_requeue_skips_and_removes_a_stale_dead_letter(ops: Ops, stack: Stack) -> None:
    """The row says the delivery is no longer dead-lettered: the entry goes, nothing is sent."""
    ops.farm.ses.fail(Fault(status=503), times=10_000)
    stack.start()
    nid = ops.notify(ops.user(), ["email"])
    ops.wait_status(nid, "email", "failed")
    wait_until(lambda: len(dead_in_broker(ops)) == 1, timeout=20, what="the dead letter")
    delivery_id = ops.deliveries(nid)["email"].delivery_id
    with ops.sessions.begin() as s:  # as if an earlier run had requeued and it failed for good
        from sqlalchemy import update

        from models.notifications import Delivery

        s.execute(
            update(Delivery)
            .where(Delivery.delivery_id == delivery_id)
            .values(dead_lettered_at=None)
        )
    ops.farm.ses.reset()
    result = ops.cli_json("dlq", "requeue", str(delivery_id))
    assert result[-1] == {"dry_run": False, "requeued": 0, "skipped": 1, "failed": 0}
    assert "stale entry removed" in result[0]["reason"]
    assert dead_in_broker(ops) == {}
    assert ops.deliveries(nid)["email"].status == "failed"
    assert ops.ses_requests(nid) == 0
