"""``published_at`` of the events this process published, set in batches off the caller's path.

Setting ``published_at`` is how the outbox relay knows an event left for
Redis. Done at once, it was a second transaction (and commit) per event,
as costly as the event's own INSERT. The mark is only a hint to the relay,
which republishes events still unmarked after ``CLARION_EVENT_RELAY_AFTER``
(5 s by default; a gateway drops a second copy), so it can wait a fraction
of that: a daemon thread marks what was published during the last
:data:`INTERVAL` in one UPDATE per database. A process that dies with marks
still queued costs a harmless republish by the relay.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence

from sqlalchemy.engine import Engine

log = logging.getLogger("clarion.events")

#: Seconds between two batches of marks: well under the relay's delay (1 s at the least).
INTERVAL = 0.1

Mark = Callable[[Engine, Sequence[str]], None]


class Marks:
    """A queue of published event ids per engine, drained by a thread of its own.

    ``mark`` is the function that sets ``published_at`` for a batch of ids.
    The thread starts with the first id queued, and again in a forked child
    (a fork copies the queue but not the thread).
    """

    def __init__(self, mark: Mark, interval: float = INTERVAL) -> None:
        self._mark = mark
        self._interval = interval
        self._reset()
        atexit.register(self.flush)

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._queued: dict[Engine, list[str]] = {}
        self._thread: threading.Thread | None = None

    def add(self, engine: Engine, event_ids: Sequence[str]) -> None:
        """Queue ``event_ids`` (published to Redis) to be marked within about :data:`INTERVAL`."""
        if os.getpid() != self._pid:
            self._reset()
        with self._lock:
            self._queued.setdefault(engine, []).extend(event_ids)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="clarion-event-marks", daemon=True
                )
                self._thread.start()

    def flush(self) -> None:
        """Mark everything queued now, in the caller's thread."""
        if os.getpid() != self._pid:
            return
        with self._lock:
            queued, self._queued = self._queued, {}
        for engine, ids in queued.items():
            try:
                self._mark(engine, ids)
            except Exception:  # the relay publishes them again; nothing is lost
                log.warning("marking %d published event(s) failed", len(ids), exc_info=True)

    def _run(self) -> None:
        while True:
            time.sleep(self._interval)
            self.flush()
