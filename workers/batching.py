"""Group commit: one transaction for the database work of many worker threads.

Every delivery makes two trips to the database: the redelivery guard before
the provider call, the write-back after it. Done one by one, a worker spends
most of its time on round trips, commits and statement overhead; under load,
threads queue behind each other anyway. The :class:`GroupCommitter` collects
what the threads of one worker process ask for, runs all pending guards in
one transaction and all pending write-backs in another (a fixed number of
statements per batch), and hands each thread its own result.

Semantics are those of the write-back store, call by call: a thread's call returns
only after the transaction holding its work committed, so a Dramatiq message
is never acknowledged before its outcome is durable. If a batch fails for a
reason other than a lost connection, each item of it is retried alone, so one
bad row cannot fail the others.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from typing import Any, Protocol

from clarion.core.db import is_transient_error
from models.writeback import SendJob, WriteBack

log = logging.getLogger("clarion.batching")

#: Most items in one transaction: bounds statement size and lock hold time.
MAX_BATCH = 128

#: How many recent batch sizes a committer remembers: a worker runs for weeks,
#: so the record must not grow with the batches run.
RECENT_BATCHES = 1024


class BatchStore(Protocol):
    """What the committer runs its batches on: a :class:`~models.writeback.WriteBackStore`."""

    def start_sending_many(
        self, delivery_ids: Sequence[uuid.UUID], *, lease_seconds: float
    ) -> dict[uuid.UUID, SendJob | None]: ...

    def write_back_many(self, items: Sequence[WriteBack]) -> None: ...

    def disable_addresses(self, address_ids: Iterable[uuid.UUID], reason: str) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class _Take:
    delivery_id: uuid.UUID
    lease_seconds: float
    future: Future[SendJob | None]


@dataclasses.dataclass(frozen=True, slots=True)
class _Write:
    item: WriteBack
    future: Future[None]


_STOP = object()


class GroupCommitter:
    """A :class:`~workers.delivery.DeliveryStore` that batches across threads."""

    def __init__(self, store: BatchStore, *, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="clarion-group-commit", daemon=True)
        self._started = False
        self._lock = threading.Lock()
        #: Sizes of the most recent batches (at most RECENT_BATCHES), for tests
        #: and benchmarks.
        self.batches: collections.deque[int] = collections.deque(maxlen=RECENT_BATCHES)

    # --- the DeliveryStore interface ---------------------------------------------------

    def start_sending(self, delivery_id: uuid.UUID, *, lease_seconds: float) -> SendJob | None:
        future: Future[SendJob | None] = Future()
        self._submit(_Take(delivery_id, lease_seconds, future))
        return future.result()

    def write_back(self, item: WriteBack) -> None:
        future: Future[None] = Future()
        self._submit(_Write(item, future))
        future.result()

    def start_sending_many(
        self, delivery_ids: Sequence[uuid.UUID], *, lease_seconds: float
    ) -> dict[uuid.UUID, SendJob | None]:
        """:meth:`start_sending` for several deliveries; they usually share a batch."""
        takes = [_Take(d, lease_seconds, Future()) for d in dict.fromkeys(delivery_ids)]
        self._submit_all(takes)
        # Every future is waited for before an error is raised: a caller that
        # retries must not race takes of its own still in the flusher's queue.
        _wait_all([t.future for t in takes])
        return {t.delivery_id: t.future.result() for t in takes}

    def write_back_soon(self, item: WriteBack) -> Future[None]:
        """Hand ``item`` to the next batch without waiting; its future ends when
        that batch committed (or failed)."""
        write = _Write(item, Future())
        self._submit(write)
        return write.future

    def write_back_many(self, items: Sequence[WriteBack]) -> None:
        """:meth:`write_back` for several outcomes; they usually share a batch."""
        writes = [_Write(item, Future()) for item in items]
        self._submit_all(writes)
        _wait_all([w.future for w in writes])
        for w in writes:
            w.future.result()

    def disable_addresses(self, address_ids: Iterable[uuid.UUID], reason: str) -> None:
        # Rare (a dead token, a gone endpoint): not worth a batch.
        self.store.disable_addresses(address_ids, reason)

    def close(self) -> None:
        if self._started:
            self._queue.put(_STOP)
            self._thread.join(timeout=10)

    # --- the flusher ----------------------------------------------------------------------

    def _submit(self, request: _Take | _Write) -> None:
        self._submit_all([request])

    def _submit_all(self, requests: Sequence[_Take | _Write]) -> None:
        if not self._started:
            with self._lock:
                if not self._started:
                    self._thread.start()
                    self._started = True
        for request in requests:
            self._queue.put(request)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            # Whatever queued up while the last batch ran goes in this one:
            # no waiting, so a lone request is not delayed.
            while len(batch) < self.max_batch:
                try:
                    request = self._queue.get_nowait()
                except queue.Empty:
                    break
                if request is _STOP:
                    self._queue.put(_STOP)
                    break
                batch.append(request)
            self.batches.append(len(batch))
            try:
                self._run_batch(batch)
            except BaseException as exc:  # the flusher must outlive any surprise
                log.exception("group commit failed unexpectedly; failing its batch")
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(exc)

    def _run_batch(self, batch: list[Any]) -> None:
        takes = [r for r in batch if isinstance(r, _Take)]
        writes = [r for r in batch if isinstance(r, _Write)]
        if writes:
            self._flush(
                writes,
                lambda items: self.store.write_back_many([w.item for w in items]),
                lambda w, _result: w.future.set_result(None),
            )
        if takes:
            self._flush_takes(takes)

    def _flush_takes(self, takes: list[_Take]) -> None:
        by_lease: dict[float, list[_Take]] = {}
        for take in takes:
            by_lease.setdefault(take.lease_seconds, []).append(take)
        for lease, group in by_lease.items():
            # The same delivery twice in one batch (a duplicated message): the
            # guard must hand it out once, so the copies go in a later batch.
            first: dict[uuid.UUID, _Take] = {}
            later: list[_Take] = []
            for take in group:
                if take.delivery_id in first:
                    later.append(take)
                else:
                    first[take.delivery_id] = take

            def take_many(items: Sequence[_Take], lease: float = lease) -> Any:
                return self.store.start_sending_many(
                    [t.delivery_id for t in items], lease_seconds=lease
                )

            self._flush(
                list(first.values()),
                take_many,
                lambda t, result: t.future.set_result(result[t.delivery_id]),
            )
            for take in later:
                self._queue.put(take)

    def _flush(
        self,
        items: Sequence[Any],
        run: Callable[[Sequence[Any]], Any],
        deliver: Callable[[Any, Any], None],
    ) -> None:
        try:
            result = run(items)
        except Exception as exc:
            if len(items) == 1 or is_transient_error(exc):
                # A lost connection fails the whole batch; every caller's own
                # retry (tenacity, in the deliverer) sends its item again.
                for item in items:
                    item.future.set_exception(exc)
                return
            log.warning(
                "a batch of %d failed (%s); retrying its items one by one",
                len(items),
                type(exc).__name__,
            )
            for item in items:
                self._flush([item], run, deliver)
            return
        for item in items:
            deliver(item, result)


def _wait_all(futures: Sequence[Future[Any]]) -> None:
    for future in futures:
        future.exception()
