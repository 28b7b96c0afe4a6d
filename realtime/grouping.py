"""Group commit: concurrent calls of one process share one statement and one commit.

When several threads of a process (an application's request threads) publish
at once, each waiting for a commit of its own costs a round trip, a
statement and a WAL flush per event. Here the first caller becomes the
leader: it takes every item queued so far (its own first), hands them to the
``commit`` function in one go, gives each caller its result, then passes the
lead to the oldest caller still waiting, if any. Nothing waits for a batch
to fill: a lone caller commits at once; batches form only while a commit is
in flight, so they grow with the load.

Each caller gets back its own result or the batch's exception. Items are
grouped per key (the database engine): one batch, one database.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Items in one batch at the most (one statement's rows).
MAX_BATCH = 64


class _Call(Generic[T, R]):
    __slots__ = ("error", "item", "lead", "result", "woken")

    def __init__(self, item: T) -> None:
        self.item = item
        self.woken = threading.Event()
        self.lead = False
        self.result: R | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[T, R]):
    """Runs ``commit(key, items)`` for batches of concurrent :meth:`run` calls.

    ``commit`` returns one result per item, in the items' order.
    """

    def __init__(
        self, commit: Callable[[Hashable, Sequence[T]], Sequence[R]], max_batch: int = MAX_BATCH
    ) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queued: dict[Hashable, list[_Call[T, R]]] = {}
        self._leading: set[Hashable] = set()

    def run(self, key: Hashable, item: T) -> R:
        """Commit ``item`` (in a batch with whatever else is queued for ``key``); its result."""
        call: _Call[T, R] = _Call(item)
        with self._lock:
            self._queued.setdefault(key, []).append(call)
            lead = key not in self._leading
            self._leading.add(key)
        if not lead:
            call.woken.wait()
            if not call.lead:  # its batch was committed by another caller
                return self._outcome(call)
        self._lead(key)
        return self._outcome(call)

    def _lead(self, key: Hashable) -> None:
        with self._lock:
            queue = self._queued[key]
            batch, self._queued[key] = queue[: self._max_batch], queue[self._max_batch :]
        try:
            results = self._commit(key, [c.item for c in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
            for c, r in zip(batch, results, strict=True):
                c.result = r
        except BaseException as exc:  # each caller of the batch raises it
            for c in batch:
                c.error = exc
        with self._lock:
            rest = self._queued[key]
            if rest:
                rest[0].lead = True
                rest[0].woken.set()
            else:
                del self._queued[key]
                self._leading.discard(key)
        for c in batch:
            c.lead = False
            c.woken.set()

    @staticmethod
    def _outcome(call: _Call[T, R]) -> R:
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[return-value]
