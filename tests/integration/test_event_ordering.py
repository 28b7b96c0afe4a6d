"""Event sequence numbers commit in order per subscription key (auction, topic)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import clarion
from clarion.core.settings import Settings

pytestmark = pytest.mark.postgres


def publish_in_thread(
    engine: Engine, auction_id: uuid.UUID | None, topic: str | None, out: dict[str, float | int]
) -> threading.Thread:
    """Publish a ``bid_placed`` in a thread; ``topic`` None keeps the default (the category)."""

    def run() -> None:
        with Session(engine) as session, session.begin():
            row = clarion.publish_event(
                "bid_placed",
                event_data={"bid_amount": 2},
                auction_id=auction_id,
                broadcast_channels=[topic] if topic else None,
                session=session,
            )
            out["seq"] = row.sequence_number
            out["numbered_at"] = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_same_auction_waits_for_the_earlier_commit(settings: Settings, clean_db: Engine) -> None:
    auction = uuid.uuid4()
    with Session(clean_db) as first:
        first.begin()
        early = clarion.publish_event(
            "bid_placed",
            event_data={"bid_amount": 1},
            auction_id=auction,
            broadcast_channels=["bids-a"],
            session=first,
        ).sequence_number
        second: dict[str, float | int] = {}
        # Same auction, another topic: the auction alone makes it wait.
        thread = publish_in_thread(clean_db, auction, "bids-b", second)
        time.sleep(0.5)
        # The second publisher of the same auction cannot take a number yet.
        assert "seq" not in second
        committed_at = time.monotonic()
        first.commit()
    thread.join(timeout=10)
    assert int(second["seq"]) > early
    assert second["numbered_at"] >= committed_at


def test_same_topic_waits_too(settings: Settings, clean_db: Engine) -> None:
    with Session(clean_db) as first:
        first.begin()
        clarion.publish_event(
            "bid_placed",
            event_data={"bid_amount": 1},
            auction_id=uuid.uuid4(),
            broadcast_channels=["shared-topic"],
            session=first,
        )
        second: dict[str, float | int] = {}
        thread = publish_in_thread(clean_db, uuid.uuid4(), "shared-topic", second)
        time.sleep(0.5)
        assert "seq" not in second
        first.commit()
    thread.join(timeout=10)
    assert "seq" in second


def test_other_auctions_and_topics_do_not_wait(settings: Settings, clean_db: Engine) -> None:
    with Session(clean_db) as first:
        first.begin()
        clarion.publish_event(
            "bid_placed",
            event_data={"bid_amount": 1},
            auction_id=uuid.uuid4(),
            broadcast_channels=["topic-one"],
            session=first,
        )
        other: dict[str, float | int] = {}
        thread = publish_in_thread(clean_db, uuid.uuid4(), "topic-two", other)
        thread.join(timeout=5)
        # Numbered while the first transaction is still open.
        assert "seq" in other
        first.rollback()


def test_auctions_sharing_the_default_topic_do_not_wait(
    settings: Settings, clean_db: Engine
) -> None:
    # Every bid_placed has the topic "bid" by default; the auctions differ.
    with Session(clean_db) as first:
        first.begin()
        first_row = clarion.publish_event(
            "bid_placed", event_data={"bid_amount": 1}, auction_id=uuid.uuid4(), session=first
        )
        assert first_row.broadcast_channels == ["bid"]
        other: dict[str, float | int] = {}
        thread = publish_in_thread(clean_db, uuid.uuid4(), None, other)
        thread.join(timeout=5)
        assert "seq" in other
        first.rollback()


def test_one_auction_on_the_default_topic_still_waits(settings: Settings, clean_db: Engine) -> None:
    auction = uuid.uuid4()
    with Session(clean_db) as first:
        first.begin()
        early = clarion.publish_event(
            "bid_placed", event_data={"bid_amount": 1}, auction_id=auction, session=first
        ).sequence_number
        second: dict[str, float | int] = {}
        thread = publish_in_thread(clean_db, auction, None, second)
        time.sleep(0.5)
        assert "seq" not in second
        committed_at = time.monotonic()
        first.commit()
    thread.join(timeout=10)
    assert int(second["seq"]) > early
    assert second["numbered_at"] >= committed_at


def test_events_without_an_auction_wait_on_their_default_topic(
    settings: Settings, clean_db: Engine
) -> None:
    with Session(clean_db) as first:
        first.begin()
        clarion.publish_event("bid_placed", event_data={"bid_amount": 1}, session=first)
        second: dict[str, float | int] = {}
        thread = publish_in_thread(clean_db, None, None, second)
        time.sleep(0.5)
        assert "seq" not in second
        first.commit()
    thread.join(timeout=10)
    assert "seq" in second
