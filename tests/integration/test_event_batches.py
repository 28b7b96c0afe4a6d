"""Events published without a session: numbered in batches under the locks, marked published."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import clarion
from clarion.core.db import get_engine
from clarion.core.settings import Settings
from realtime import outbox

pytestmark = pytest.mark.postgres


def rows(engine: Engine, auction: uuid.UUID) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT sequence_number, event_data, published_at FROM real_time_events"
                    " WHERE auction_id = :a ORDER BY sequence_number"
                ),
                {"a": auction},
            )
        )


@pytest.fixture
def inserts(settings: Settings) -> Iterator[list[str]]:
    """The INSERTs of events on the engine ``publish_event`` uses, as they are sent."""
    engine = get_engine(settings.effective_database_url)
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("INSERT INTO real_time_events"):
            seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(engine, "before_cursor_execute", record)


def test_a_batch_is_numbered_only_once_every_auction_of_it_is_free(
    settings: Settings, clean_db: Engine
) -> None:
    held, other = uuid.uuid4(), uuid.uuid4()
    engine = get_engine(settings.effective_database_url)
    outlet = outbox.Outlet(outbox.redis_client(settings.redis_url), settings.events_channel)
    batch = [
        outbox.event_values(outbox.EventSpec("bid_placed", {"n": 1}, auction_id=other)),
        outbox.event_values(outbox.EventSpec("bid_placed", {"n": 2}, auction_id=held)),
    ]
    out: dict[str, Any] = {}

    def commit() -> None:
        out["rows"] = outbox._commit_batch((engine, outlet), batch)
        out["at"] = time.monotonic()

    with Session(clean_db) as first:
        first.begin()
        early = clarion.publish_event(
            "bid_placed", event_data={"n": 0}, auction_id=held, session=first
        ).sequence_number
        thread = threading.Thread(target=commit)
        thread.start()
        time.sleep(0.5)
        assert "rows" not in out  # its first row's auction is free, its second's is not
        committed_at = time.monotonic()
        first.commit()
    thread.join(10)
    assert out["at"] >= committed_at
    numbers = [row.sequence_number for row in out["rows"]]
    assert all(n > early for n in numbers) and len(set(numbers)) == 2
    assert [r.event_data["n"] for r in rows(clean_db, held)] == [0, 2]


def test_callers_queued_behind_stuck_lanes_go_in_together_after_the_commit(
    settings: Settings, clean_db: Engine, inserts: list[str]
) -> None:
    held, other = uuid.uuid4(), uuid.uuid4()
    out: dict[str, Any] = {}

    def publish(name: str, auction: uuid.UUID) -> None:
        row = clarion.publish_event("bid_placed", event_data={"n": name}, auction_id=auction)
        out[name] = (row.sequence_number, time.monotonic())

    with Session(clean_db) as first:
        first.begin()
        early = clarion.publish_event(
            "bid_placed", event_data={"n": "open"}, auction_id=held, session=first
        ).sequence_number
        # Both lanes get stuck on the held auction; the next callers queue behind them.
        stuck = [threading.Thread(target=publish, args=(f"held{i}", held)) for i in range(2)]
        for t in stuck:
            t.start()
        time.sleep(0.3)
        queued = [threading.Thread(target=publish, args=(f"q{i}", other)) for i in range(3)]
        queued.append(threading.Thread(target=publish, args=("q-held", held)))
        for t in queued:
            t.start()
        time.sleep(0.5)
        assert out == {}  # nobody numbered while the auction's first event is uncommitted
        committed_at = time.monotonic()
        first.commit()
    for t in stuck + queued:
        t.join(10)
    assert sorted(out) == ["held0", "held1", "q-held", "q0", "q1", "q2"]
    assert all(at >= committed_at for _seq, at in out.values())
    assert all(seq > early for seq, _at in out.values())
    # The stuck statement(s) (one per lane, or one for both if the second
    # caller was queued in time), then the four queued callers in one or two.
    assert 2 <= len(inserts) <= 4
    numbers = [r.sequence_number for r in rows(clean_db, held)]
    assert numbers == sorted(numbers) and len(set(numbers)) == 4


def test_concurrent_publishers_get_distinct_numbers_in_their_own_order(
    settings: Settings, clean_db: Engine
) -> None:
    auctions = [uuid.uuid4() for _ in range(4)]
    listener = redis.Redis.from_url(settings.redis_url).pubsub()
    listener.subscribe(settings.events_channel)
    assert listener.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]
    got: dict[int, list[int]] = {}

    def publisher(i: int) -> None:
        got[i] = [
            clarion.publish_event(
                "bid_placed", event_data={"p": i, "k": k}, auction_id=auctions[i % 4]
            ).sequence_number
            for k in range(20)
        ]

    threads = [threading.Thread(target=publisher, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    every = [n for numbers in got.values() for n in numbers]
    assert len(every) == 240 and len(set(every)) == 240
    for numbers in got.values():  # each publisher's events in the order it published them
        assert numbers == sorted(numbers)
    for auction in auctions:
        stored = rows(clean_db, auction)
        assert len(stored) == 60
        by_publisher: dict[int, list[int]] = {}
        for r in stored:
            by_publisher.setdefault(r.event_data["p"], []).append(r.event_data["k"])
        assert all(ks == list(range(20)) for ks in by_publisher.values())
    published = 0
    deadline = time.monotonic() + 10
    while published < 240 and time.monotonic() < deadline:
        message = listener.get_message(timeout=1)
        if message and message["type"] == "message":
            published += 1
    assert published == 240
    listener.close()


def test_published_events_are_marked_shortly_after(settings: Settings, clean_db: Engine) -> None:
    auction = uuid.uuid4()
    for n in range(3):
        clarion.publish_event("bid_placed", event_data={"n": n}, auction_id=auction)
    deadline = time.monotonic() + 5
    while any(r.published_at is None for r in rows(clean_db, auction)):
        assert time.monotonic() < deadline, "published_at still unset after 5 s"
        time.sleep(0.05)
    # A publish that failed (no Redis) leaves the mark for the relay.
    failing = outbox.Outlet(redis.Redis.from_url("redis://127.0.0.1:1/0"), "nowhere")
    lost = uuid.uuid4()
    outbox._record_and_publish(
        get_engine(settings.effective_database_url),
        outbox.EventSpec("bid_placed", {"n": 9}, auction_id=lost),
        failing,
    )
    outbox.MARKS.flush()
    assert [r.published_at for r in rows(clean_db, lost)] == [None]
