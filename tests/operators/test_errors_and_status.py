"""One-line errors with their exit codes; ``clarion status`` and its ``--check``."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from harness import Stack, wait_until
from operators_support import Ops

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def one_line(done: Any, code: int) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return str(lines[0])


def test_unreachable_broker_and_database(ops: Ops) -> None:
    bad_broker = (
        "amqp://guest:guest@127.0.0.1:1/" if ops.broker == "rabbitmq" else "redis://127.0.0.1:1/13"
    )
    for command in (
        ["dlq", "list", "--source", "broker"],
        ["dlq", "diff"],
        ["status"],
        ["dlq", "requeue", "--all"],
    ):
        line = one_line(ops.cli(*command, env={"CLARION_BROKER_URL": bad_broker}), 5)
        assert line.startswith("clarion: broker unreachable")
    # The database's view needs no broker: it lists, and says what it could not compare.
    listed = ops.cli("dlq", "list", env={"CLARION_BROKER_URL": bad_broker})
    assert listed.returncode == 0, listed.stderr
    assert "broker is unreachable" in listed.stdout
    assert ops.cli_json("dlq", "list", env={"CLARION_BROKER_URL": bad_broker}) == []
    bad_db = (
        sa.make_url(ops.env["CLARION_DATABASE_URL"])
        .set(port=1)
        .render_as_string(hide_password=False)
    )
    for command in (["dlq", "list"], ["status"], ["inspect", str(uuid.uuid4())]):
        line = one_line(ops.cli(*command, env={"CLARION_DATABASE_URL": bad_db}), 4)
        assert line.startswith("clarion: database unreachable")


def test_unknown_ids_and_bad_filters(ops: Ops) -> None:
    assert "not found" in one_line(ops.cli("dlq", "show", "no-such-message"), 6)
    assert "not found" in one_line(ops.cli("dlq", "requeue", str(uuid.uuid4())), 6)
    assert "not found" in one_line(ops.cli("inspect", str(uuid.uuid4())), 6)
    one_line(ops.cli("inspect", "not-a-uuid"), 2)
    for args in (
        ["--since", "yesterday"],
        ["--channel", "fax"],
        ["--queue", "nope"],
        ["--limit", "-1"],
        ["--since", "1h", "--until", "2h"],
    ):
        one_line(ops.cli("dlq", "list", *args), 2)
    one_line(ops.cli("dlq", "list", env={"CLARION_DLQ_LIMIT": "ten"}), 2)
    one_line(ops.cli("dlq", "list", env={"CLARION_DLQ_JSON": "maybe"}), 2)
    assert "--source" in one_line(ops.cli("dlq", "list", "--source", "cache"), 2)
    assert "CLARION_DLQ_SOURCE" in ops.cli("dlq", "list", "--help").stdout
    one_line(ops.cli("dlq", "diff", "--channel", "fax"), 2)
    one_line(ops.cli("dlq", "requeue"), 2)  # neither ids nor --all
    one_line(ops.cli("status", "--max-due-age", "soon"), 2)


def test_status_check(ops: Ops, stack: Stack) -> None:
    # Nothing running: no live worker.
    done = ops.cli("status", "--check", "--heartbeat-window", "5")
    assert done.returncode == 7, done.stdout + done.stderr
    assert "live workers" in done.stderr
    [report] = ops.cli_json("status", "--heartbeat-window", "5")
    assert report["live_workers"] == 0 and not report["healthy"]
    assert {q["queue"] for q in report["queues"]} >= {"email", "email_urgent", "sms"}

    # A due notification nobody claims for too long.
    nid = ops.notify(ops.user(), ["email"])
    with ops.engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE notifications SET created_at = now() - interval '5 minutes'"
                " WHERE notification_id = :n"
            ),
            {"n": nid},
        )
    done = ops.cli("status", "--check", "--min-workers", "0", "--max-due-age", "60")
    assert done.returncode == 7
    assert "oldest due notification" in done.stderr
    assert (
        ops.cli("status", "--check", "--min-workers", "0", "--max-due-age", "600").returncode == 0
    )
    [report] = ops.cli_json("status", env={"CLARION_STATUS_MIN_WORKERS": "0"})
    assert report["oldest_due_notification_id"] == str(nid)
    assert report["oldest_due_age_seconds"] >= 299
    assert report["notifications"]["last_hour"]["pending"] == 1


def test_a_scheduler_alone_is_not_a_live_worker(ops: Ops, stack: Stack) -> None:
    stack.start(worker=False)
    nid = ops.notify(ops.user(), ["email"])
    # The scheduler enqueued (and so stamped the broker's heartbeats)...
    wait_until(lambda: ops.deliveries(nid).get("email"), timeout=10, what="a claim")
    # ...yet no worker consumes: the probe must fail.
    done = ops.cli("status", "--check", "--heartbeat-window", "30")
    assert done.returncode == 7, done.stdout + done.stderr
    assert "live workers" in done.stderr


def test_status_passes_on_a_healthy_farm(ops: Ops, stack: Stack) -> None:
    stack.start()
    nid = ops.notify(ops.user(), ["email"])
    ops.wait_status(nid, "email", "sent")
    done = wait_until(
        lambda: (d := ops.cli("status", "--check")).returncode == 0 and d,
        timeout=10,
        what="a healthy status",
    )
    assert "healthy" in done.stdout
    [report] = ops.cli_json("status", "--check")
    assert report["healthy"] and report["live_workers"] >= 1
    assert report["notifications"]["last_hour"]["sent"] >= 1
    assert report["oldest_due_age_seconds"] is None
