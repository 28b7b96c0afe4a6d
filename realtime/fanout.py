"""The fan-out record: how long each event took from its publish to the last socket write.

When ``CLARION_GATEWAY_FANOUT_LOG`` names a file, every gateway process
appends one JSON line per event it dispatched, once the event's last frame
was handed to a socket (or 10 s later if some never were: a slow consumer
cut off, a connection gone)::

    {"pid": 4242, "event_id": "...", "seq": 42, "published_at": 1764650000.001,
     "received_at": 1764650000.003, "last_write_at": 1764650000.021,
     "deliveries": 5000, "direct": 4990, "queued": 10, "complete": true,
     "dispatch_cpu": 0.052, "dispatch_runqueue": 0.031}

Times are POSIX seconds: ``published_at`` is when the publisher (or the
relay) sent the event to Redis (:func:`realtime.outbox.publish_payloads`
stamps it into the message), ``received_at`` when this process read it,
``last_write_at`` when its last frame went to a socket. ``direct`` frames
were written during the dispatch itself; ``queued`` ones waited for their
connection's writer. ``dispatch_cpu`` and ``dispatch_runqueue`` are the
seconds the dispatching thread ran on a CPU and waited for one (runnable,
not running: other processes had the cores) from ``received_at`` to the end
of the dispatch, from ``/proc/thread-self/schedstat`` (null where there is
none): what the dispatch's wall time is made of. The benchmark
(``bench/realtime_gateway.py``) reads the file for the gateway-side latency;
several processes append to the same file, one ``write`` per line
(``O_APPEND``), so lines never interleave.

Off (no file) it costs nothing: the gateway does not build the recorder.
"""

from __future__ import annotations

import json
import os
import time

from realtime.visibility import EventView

#: Seconds after which an event still waiting for queued writes is written out as incomplete.
GIVE_UP_AFTER = 10.0


class FanoutLog:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.pid = os.getpid()
        #: event_id -> the record of an event whose queued frames are not all written yet
        self.waiting: dict[str, dict[str, object]] = {}

    @staticmethod
    def sched() -> tuple[float, float] | None:
        """(seconds on a CPU, seconds runnable but waiting) of this thread so far."""
        try:
            with open("/proc/thread-self/schedstat", "rb") as f:
                ran, waited = f.read().split()[:2]
        except (OSError, ValueError):
            return None
        return int(ran) / 1e9, int(waited) / 1e9

    def dispatched(
        self,
        event: EventView,
        received_at: float,
        direct: int,
        queued: int,
        sched_at_start: tuple[float, float] | None = None,
    ) -> None:
        """The dispatch of ``event`` ended: ``direct`` frames written, ``queued`` waiting;
        ``sched_at_start`` is :meth:`sched` when it began."""
        published = event.payload.get("published_at")
        sched_now = self.sched() if sched_at_start is not None else None
        record: dict[str, object] = {
            "pid": self.pid,
            "event_id": event.event_id,
            "seq": event.seq,
            "published_at": published if isinstance(published, int | float) else None,
            "received_at": received_at,
            "last_write_at": time.time(),
            "deliveries": direct + queued,
            "direct": direct,
            "queued": queued,
            "written": 0,
            "dispatch_cpu": None,
            "dispatch_runqueue": None,
        }
        if sched_at_start is not None and sched_now is not None:
            record["dispatch_cpu"] = sched_now[0] - sched_at_start[0]
            record["dispatch_runqueue"] = sched_now[1] - sched_at_start[1]
        if queued:
            self.waiting[event.event_id] = record
        else:
            self._write(record, complete=True)

    def written(self, event_id: str) -> None:
        """One queued frame of ``event_id`` went to its socket."""
        record = self.waiting.get(event_id)
        if record is None:
            return
        record["last_write_at"] = time.time()
        written = int(record["written"]) + 1  # type: ignore[call-overload]
        record["written"] = written
        if written >= int(record["queued"]):  # type: ignore[call-overload]
            del self.waiting[event_id]
            self._write(record, complete=True)

    def expire(self) -> None:
        """Write out events still waiting after :data:`GIVE_UP_AFTER` seconds."""
        now = time.time()
        for event_id, record in list(self.waiting.items()):
            if now - float(record["received_at"]) >= GIVE_UP_AFTER:  # type: ignore[arg-type]
                del self.waiting[event_id]
                self._write(record, complete=False)

    def close(self) -> None:
        for record in self.waiting.values():
            self._write(record, complete=False)
        self.waiting.clear()
        os.close(self.fd)

    def _write(self, record: dict[str, object], *, complete: bool) -> None:
        record["complete"] = complete
        del record["written"]
        os.write(self.fd, (json.dumps(record) + "\n").encode())
