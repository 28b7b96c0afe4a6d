"""The two views of the dead letters: the database's (the default) and the broker's.

``dlq list`` reads PostgreSQL through a partial index, so ``--limit`` reads no
more rows than it shows; ``--source broker`` reads the dead-letter queues. When
the two differ, ``clarion status`` says where (counts per queue), ``dlq list``
says so under its table, and ``dlq diff`` names every dead letter that is in
one and not in the other, including differences that cancel out in the counts.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from harness import Stack, wait_until
from operators_support import BROKERS, Ops

from channels.sandboxes.http import Fault
from clarion.operators.deadletters import open_dead_letters
from clarion.operators.dlq import DeadLetterOps, Filters
from models.notifications import Delivery

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(300)]


def dead_in_broker(ops: Ops) -> dict[str, str]:
    with open_dead_letters(BROKERS[ops.broker]) as store:
        return {e.message_id: str(e.delivery_id) for e in store.entries()}


def status(ops: Ops) -> dict[str, Any]:
    [report] = ops.cli_json("status", env={"CLARION_STATUS_MIN_WORKERS": "0"})
    return report


def diff(ops: Ops) -> tuple[dict[str, set[str]], dict[str, int]]:
    *rows, summary = ops.cli_json("dlq", "diff")
    sides: dict[str, set[str]] = {"database only": set(), "broker only": set()}
    for row in rows:
        sides[row["side"]].add(row["delivery_id"])
    return sides, summary


def test_disagreements_are_reported_not_hidden(ops: Ops, stack: Stack) -> None:
    ops.farm.ses.fail(Fault(status=503), times=10_000)
    stack.start()
    nids = [ops.notify(ops.user(), ["email"]) for _ in range(3)]
    for nid in nids:
        ops.wait_status(nid, "email", "failed")
    wait_until(lambda: len(dead_in_broker(ops)) == 3, timeout=30, what="3 dead letters")
    stack.stop()  # nothing moves from here on but what the test does
    deliveries = [str(ops.deliveries(nid)["email"].delivery_id) for nid in nids]

    # Agreement: the same dead letters on both sides.
    assert status(ops)["dead_letters"] == {"broker": 3, "database": 3, "disagree": []}
    assert diff(ops) == (
        {"database only": set(), "broker only": set()},
        {"both": 3, "database_only": 0, "broker_only": 0},
    )
    text = ops.cli("status")
    assert "the database and the broker agree (3)" in text.stdout, text.stdout

    # A dead letter leaves the broker behind the database's back (as when it
    # expires after 7 days): the database still lists it, and says the broker
    # holds fewer.
    expired = deliveries[0]
    with open_dead_letters(BROKERS[ops.broker]) as store:
        [letter] = [e for e in store.entries() if str(e.delivery_id) == expired]
        assert store.remove_many([letter]) == [True]
    listed = ops.cli_json("dlq", "list")
    assert {e["delivery_id"] for e in listed} == set(deliveries)
    from_broker = ops.cli_json("dlq", "list", "--source", "broker")
    assert {e["delivery_id"] for e in from_broker} == set(deliveries[1:])
    report = status(ops)
    assert report["dead_letters"] == {
        "broker": 2,
        "database": 3,
        "disagree": [{"queue": "email", "database": 3, "broker": 2}],
    }
    [email] = [q for q in report["queues"] if q["queue"] == "email"]
    assert (email["dead"], email["dead_in_database"]) == (2, 3)
    text = ops.cli("status")
    assert "email: 3 in the database, 2 in the broker" in text.stdout, text.stdout
    table = ops.cli("dlq", "list")
    assert "the database and the broker disagree: email: 3 in the database, 2 in the broker" in (
        " ".join(table.stdout.split())
    ), table.stdout
    assert diff(ops) == (
        {"database only": {expired}, "broker only": set()},
        {"both": 2, "database_only": 1, "broker_only": 0},
    )

    # Another delivery stops being dead-lettered while its entry stays: now
    # the counts agree (2 and 2), but not the dead letters, and diff says so.
    kept = deliveries[1]
    with ops.sessions.begin() as s:
        s.execute(
            sa.update(Delivery)
            .where(Delivery.delivery_id == uuid.UUID(kept))
            .values(dead_lettered_at=None)
        )
    assert status(ops)["dead_letters"]["disagree"] == []
    assert diff(ops) == (
        {"database only": {expired}, "broker only": {kept}},
        {"both": 1, "database_only": 1, "broker_only": 1},
    )
    shown = ops.cli("dlq", "diff")
    assert shown.returncode == 0
    assert "in both 1, database only 1, broker only 1" in shown.stdout


def seed_dead_rows(ops: Ops, n: int) -> list[uuid.UUID]:
    """``n`` dead-lettered webhook deliveries written directly, one second apart
    (the newest last), every tenth with an error naming a percentage."""
    user = uuid.uuid4()
    notifications = [uuid.uuid4() for _ in range(n)]
    deliveries = [uuid.uuid4() for _ in range(n)]
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=n)
    died = [start + dt.timedelta(seconds=i) for i in range(n)]
    errors = ["quota 50% used" if i % 10 == 0 else "quota 500 used" for i in range(n)]
    with ops.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO notifications (notification_id, user_id, notification_type,"
                " category, priority, title, message, delivery_channels, status, max_attempts)"
                " SELECT u, :user, 'webhook', 'bid', 'normal', 'Outbid', 'Lot 7',"
                " '[\"webhook\"]'::jsonb, 'failed', 3 FROM unnest(CAST(:ids AS uuid[])) AS u"
            ),
            {"user": user, "ids": notifications},
        )
        conn.execute(
            sa.text(
                "INSERT INTO notification_deliveries (delivery_id, notification_id, channel,"
                " status, attempts, queue_name, message_id, last_error, failed_at,"
                " dead_lettered_at) SELECT d, n, 'webhook', 'failed', 3, 'webhook', d::text, e,"
                " t, t FROM unnest(CAST(:ds AS uuid[]), CAST(:ns AS uuid[]),"
                " CAST(:es AS text[]), CAST(:ts AS timestamptz[])) AS v(d, n, e, t)"
            ),
            {"ds": deliveries, "ns": notifications, "es": errors, "ts": died},
        )
        conn.exec_driver_sql("ANALYZE notification_deliveries")
        conn.exec_driver_sql("ANALYZE notifications")
    return deliveries


def plan(ops: Ops, filters: Filters) -> dict[str, Any]:
    """EXPLAIN ANALYZE of the database view's query: what PostgreSQL really read."""
    query = DeadLetterOps.rows_query(filters)
    with ops.engine.connect() as conn:
        compiled = query.compile(conn)
        raw = conn.exec_driver_sql(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + str(compiled), compiled.params
        ).scalar_one()
    top: dict[str, Any] = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    return top


def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]


def test_limit_reads_no_more_rows_than_it_shows(ops: Ops) -> None:
    deliveries = seed_dead_rows(ops, 5_000)
    with open_dead_letters(BROKERS[ops.broker]) as store:
        dlq = DeadLetterOps(store, ops.sessions)
        newest = [r.delivery_id for r in dlq.iter_rows(Filters(limit=20))]
        assert newest == deliveries[::-1][:20]
        # Filters are part of the query: --error is a literal substring.
        fifty = list(dlq.iter_rows(Filters(error="50%", limit=5)))
        assert [r.delivery_id for r in fifty] == [
            d for d in deliveries[::-1] if d in deliveries[::10]
        ][:5]
        assert {r.last_error for r in fifty} == {"quota 50% used"}
        assert len(list(dlq.iter_rows(Filters(error="50%")))) == 500
        assert len(list(dlq.iter_rows(Filters(channel=None, queue="email")))) == 0
        assert len(list(dlq.iter_rows(Filters()))) == 5_000  # streamed, not truncated

    for filters in (Filters(limit=20), Filters(queue="webhook", limit=20)):
        top = plan(ops, filters)
        assert top["Actual Rows"] == 20
        scans = [n for n in nodes(top) if n.get("Relation Name") == "notification_deliveries"]
        assert [n.get("Index Name") for n in scans] == ["ix_notification_deliveries_dead_lettered"]
        # The newest twenty come first in the index: no more rows are read.
        assert scans[0]["Actual Rows"] == 20, scans[0]
