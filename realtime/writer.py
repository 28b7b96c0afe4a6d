"""Write-behind for connection rows: many small writes become one batch per round.

The gateway hands inserts and updates to :class:`Writer` without waiting
(except an insert, whose caller needs the row before it accepts the
socket). One task drains what accumulated, runs it in a worker thread as
one transaction (``executemany`` per column set) and wakes the waiters.
Batches run one at a time, in submission order, so a row's updates are
never applied out of order. Updates of one connection within a batch are
merged (later values win).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from realtime.store import Store

log = logging.getLogger("clarion.realtime.writer")


class Writer:
    def __init__(self, store: Store, *, max_delay: float = 0.05) -> None:
        self.store = store
        self.max_delay = max_delay
        self._inserts: list[dict[str, Any]] = []
        self._updates: dict[uuid.UUID, dict[str, Any]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="clarion-writer")

    def insert(self, row: dict[str, Any]) -> asyncio.Future[None]:
        """Queue an INSERT; the future resolves when it is committed (or fails)."""
        self._inserts.append(row)
        return self._waiter()

    def update(self, connection_id: uuid.UUID, **values: Any) -> None:
        """Queue an UPDATE of one connection row (merged with others of the same batch)."""
        self._updates.setdefault(connection_id, {"connection_id": connection_id}).update(values)
        self._wake.set()

    async def flush(self) -> None:
        """Wait until everything queued so far is written."""
        if self._inserts or self._updates:
            await self._waiter()

    async def close(self) -> None:
        await self.flush()
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task

    def _waiter(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._wake.set()
        return future

    async def _run(self) -> None:
        while not self._closed:
            await self._wake.wait()
            # A short pause lets a burst of connects land in one batch.
            await asyncio.sleep(self.max_delay)
            self._wake.clear()
            inserts, self._inserts = self._inserts, []
            updates, self._updates = self._updates, {}
            waiters, self._waiters = self._waiters, []
            error: BaseException | None = None
            try:
                await asyncio.to_thread(self._write, inserts, list(updates.values()))
            except Exception as exc:  # the database is down: keep serving, report it
                log.warning(
                    "writing %d connection rows failed: %s", len(inserts) + len(updates), exc
                )
                error = exc
            for future in waiters:
                if future.done():
                    continue
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)

    def _write(self, inserts: list[dict[str, Any]], updates: list[dict[str, Any]]) -> None:
        self.store.insert_connections(inserts)
        self.store.update_connections(updates)
