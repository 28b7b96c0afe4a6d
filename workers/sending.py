"""Provider calls in flight together: a worker process's pool of sending threads.

A message carries several deliveries of one queue (:func:`workers.actors.declare_actors`).
Sent one after the other, their provider calls would add up: 50 webhooks to a
receiver that answers in 200 ms would take 10 s, and the worker's throughput
would be its thread count divided by the provider's latency. The SDKs are
synchronous (boto3, twilio, pyfcm, httpx's client), so their calls run on a
pool of threads of this process, sized by ``CLARION_SEND_CONCURRENCY``: a
batch's calls are in flight together, and every worker thread's batches share
the pool, so the provider's latency is paid once per batch, not once per
delivery. The providers' connection pools are sized to it (the webhook
client's ``max_connections``), so that threads do not queue behind a pool
smaller than themselves.

Providers whose call is a local round trip of microseconds (the in-app
channel's Redis PUBLISH) are called on the worker's own thread: handing them
to another thread would cost more than the call.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Sender:
    """Runs a batch's calls on this process's pool; at most ``concurrency`` at once."""

    def __init__(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError(f"send concurrency must be at least 1, not {concurrency}")
        self.concurrency = concurrency
        self._pool: ThreadPoolExecutor | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        # Built on first use and again after a fork: a pool's threads do not
        # survive into a child process.
        if self._pool is None or self._pid != os.getpid():
            with self._lock:
                if self._pool is None or self._pid != os.getpid():
                    self._pool = ThreadPoolExecutor(
                        max_workers=self.concurrency, thread_name_prefix="clarion-send"
                    )
                    self._pid = os.getpid()
        return self._pool

    def run(self, calls: Sequence[T], call: Callable[[T], None]) -> None:
        """``call(c)`` for every ``c`` of ``calls``, together; returns when all returned.

        ``call`` must not raise (each call records its own outcome); if one
        does anyway, the first such error is raised once all calls finished.
        """
        if not calls:
            return
        if len(calls) == 1 or self.concurrency == 1:
            for c in calls:
                call(c)
            return
        pool = self._executor()
        futures: list[Future[None]] = [pool.submit(call, c) for c in calls[1:]]
        # The calling thread makes one call itself instead of only waiting.
        first_error: BaseException | None = None
        try:
            call(calls[0])
        except BaseException as exc:  # re-raised below, after the others finished
            first_error = exc
        for future in futures:
            error = future.exception()
            if error is not None and first_error is None:
                first_error = error
        if first_error is not None:
            raise first_error

    def close(self) -> None:
        if self._pool is not None and self._pid == os.getpid():
            self._pool.shutdown(wait=True)
        self._pool = None
