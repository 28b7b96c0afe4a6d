"""Group commit: concurrent calls of one process share one statement and one commit.

When several threads of a process (an application's request threads) publish
at once, each waiting for a commit of its own costs a round trip, a
statement and a WAL flush per event. Here a caller that finds a free lane
(at most :data:`LANES` commits in flight per key) leads: it takes every item
queued so far (its own first), hands them to the ``commit`` function in one
go, gives each caller its result, then passes the lead to the oldest caller
still waiting, if any. Nothing waits for a batch to fill: a lone caller
commits at once; batches form only while commits are in flight, so they
grow with the load.

Why more than one lane: a batch may wait in the database (an event of an
auction whose lock another transaction holds); the callers queued behind it
would wait too, whatever their auction. A second lane keeps the others
going.

Each caller gets back its own result or the batch's exception. Items are
grouped per key (the database engine): one batch, one database.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Items in one batch at the most (one statement's rows).
MAX_BATCH = 64
#: Batches in flight at once per key.
LANES = 2


class _Call(Generic[T, R]):
    __slots__ = ("done", "error", "item", "lead", "result")

    def __init__(self, item: T) -> None:
        self.item = item
        self.lead = False  # this caller commits batches until its own item is done
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[T, R]):
    """Runs ``commit(key, items)`` for batches of concurrent :meth:`run` calls.

    ``commit`` returns one result per item, in the items' order.
    """

    def __init__(
        self,
        commit: Callable[[Hashable, Sequence[T]], Sequence[R]],
        max_batch: int = MAX_BATCH,
        lanes: int = LANES,
    ) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._lanes = lanes
        self._reset()

    def _reset(self) -> None:
        # A forked child inherits the parent's queues and leader counts but
        # not its threads: it starts afresh, or it would wait for them forever.
        self._pid = os.getpid()
        self._changed = threading.Condition()
        self._queued: dict[Hashable, list[_Call[T, R]]] = {}
        self._leaders: dict[Hashable, int] = {}

    def run(self, key: Hashable, item: T) -> R:
        """Commit ``item`` (in a batch with whatever else is queued for ``key``); its result."""
        if os.getpid() != self._pid:
            self._reset()
        call: _Call[T, R] = _Call(item)
        with self._changed:
            queue = self._queued.setdefault(key, [])
            queue.append(call)
            if self._leaders.get(key, 0) < self._lanes:
                self._leaders[key] = self._leaders.get(key, 0) + 1
                call.lead = True
            else:
                self._changed.wait_for(lambda: call.done or call.lead)
        while call.lead:
            with self._changed:
                if call.done:
                    self._hand_over(key, queue)
                    break
                batch = queue[: self._max_batch]
                del queue[: self._max_batch]
                if not batch:  # its item is in another lane's batch
                    self._changed.wait_for(lambda: call.done)
                    continue
            self._commit_batch(key, batch)
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[return-value]

    def _commit_batch(self, key: Hashable, batch: list[_Call[T, R]]) -> None:
        results: Sequence[R] = ()
        error: BaseException | None = None
        try:
            results = self._commit(key, [c.item for c in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
        except BaseException as exc:  # each caller of the batch raises it
            error = exc
        with self._changed:
            for i, c in enumerate(batch):
                c.error = error
                c.result = None if error is not None else results[i]
                c.done = True
            self._changed.notify_all()

    def _hand_over(self, key: Hashable, queue: list[_Call[T, R]]) -> None:
        """Pass the lead to the oldest caller still queued, or free the lane (lock held)."""
        for c in queue:
            if not c.lead:
                c.lead = True
                self._changed.notify_all()
                return
        self._leaders[key] -= 1
        if not self._leaders[key]:
            del self._leaders[key]
            if not queue and self._queued.get(key) is queue:
                del self._queued[key]
