"""The group committer without a database: an in-memory store behind it."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

from models.writeback import SendJob, WriteBack
from workers.batching import RECENT_BATCHES, GroupCommitter


class NothingQueued:
    """A store in which no delivery is queued: every guard says None."""

    def __init__(self) -> None:
        self.taken: list[uuid.UUID] = []

    def start_sending_many(
        self, delivery_ids: Sequence[uuid.UUID], *, lease_seconds: float
    ) -> dict[uuid.UUID, SendJob | None]:
        self.taken.extend(delivery_ids)
        return dict.fromkeys(delivery_ids)

    def write_back_many(self, items: Sequence[WriteBack]) -> None:
        raise AssertionError("nothing to write back")

    def disable_addresses(self, address_ids: Iterable[uuid.UUID], reason: str) -> None:
        raise AssertionError("no address to disable")


def test_the_record_of_batch_sizes_stays_bounded() -> None:
    store = NothingQueued()
    committer = GroupCommitter(store)
    calls = RECENT_BATCHES + 200
    try:
        # One caller, one request at a time: every request is a batch of its own.
        for _ in range(calls):
            assert committer.start_sending(uuid.uuid4(), lease_seconds=60) is None
    finally:
        committer.close()
    assert len(store.taken) == calls
    assert len(committer.batches) == RECENT_BATCHES
    assert set(committer.batches) == {1}
