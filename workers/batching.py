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


class _Group:
    """One caller's several requests, answered together through one future.

    A Future per request cost more CPU (each builds a Condition) than the
    statements it waited for. The flusher alone resolves the slots, so the
    counting needs no lock; the first error fails the whole group, once all
    its slots are resolved (so that a caller retrying never races requests of
    its own still queued).
    """

    __slots__ = ("error", "future", "left", "results")

    def __init__(self, size: int) -> None:
        self.future: Future[dict[Any, Any]] = Future()
        self.results: dict[Any, Any] = {}
        self.left = size
        self.error: BaseException | None = None

    def resolve(self, key: Any, value: Any, error: BaseException | None) -> None:
        if error is not None and self.error is None:
            self.error = error
        else:
            self.results[key] = value
        self.left -= 1
        if self.left == 0:
            if self.error is not None:
                self.future.set_exception(self.error)
            else:
                self.future.set_result(self.results)


class _Slot:
    """The future-like end of one request: its own Future, or a place in a group."""

    __slots__ = ("future", "group", "key", "resolved")

    def __init__(self, key: Any, group: _Group | None) -> None:
        self.key = key
        self.group = group
        self.future: Future[Any] | None = Future() if group is None else None
        self.resolved = False

    def set_result(self, value: Any) -> None:
        if self.group is not None:
            self.resolved = True
            self.group.resolve(self.key, value, None)
        else:
            assert self.future is not None
            self.future.set_result(value)

    def set_exception(self, error: BaseException) -> None:
        if self.group is not None:
            self.resolved = True
            self.group.resolve(self.key, None, error)
        else:
            assert self.future is not None
            self.future.set_exception(error)

    def done(self) -> bool:
        if self.group is not None:
            return self.resolved
        assert self.future is not None
        return self.future.done()


@dataclasses.dataclass(frozen=True, slots=True)
class _Take:
    delivery_id: uuid.UUID
    lease_seconds: float
    future: _Slot


@dataclasses.dataclass(frozen=True, slots=True)
class _Write:
    item: WriteBack
    future: _Slot


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
        return self.start_sending_many([delivery_id], lease_seconds=lease_seconds)[delivery_id]

    def write_back(self, item: WriteBack) -> None:
        self.write_back_many([item])

    def start_sending_many(
        self, delivery_ids: Sequence[uuid.UUID], *, lease_seconds: float
    ) -> dict[uuid.UUID, SendJob | None]:
        """:meth:`start_sending` for several deliveries; they usually share a batch."""
        ids = list(dict.fromkeys(delivery_ids))
        group = _Group(len(ids))
        self._submit_all([_Take(d, lease_seconds, _Slot(d, group)) for d in ids])
        result: dict[uuid.UUID, SendJob | None] = group.future.result()
        return result

    def write_back_soon(self, item: WriteBack) -> Future[None]:
        """Hand ``item`` to the next batch without waiting; its future ends when
        that batch committed (or failed)."""
        slot = _Slot(None, None)
        self._submit(_Write(item, slot))
        assert slot.future is not None
        return slot.future

    def write_back_many(self, items: Sequence[WriteBack]) -> None:
        """:meth:`write_back` for several outcomes; they usually share a batch."""
        if not items:
            return
        group = _Group(len(items))
        self._submit_all([_Write(item, _Slot(i, group)) for i, item in enumerate(items)])
        group.future.result()

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
