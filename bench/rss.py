"""Resident memory of a process tree, read from /proc (Linux), sampled in a thread."""

from __future__ import annotations

import threading
from pathlib import Path


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's ``children`` list)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue  # the thread ended meanwhile
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children(p)
    return out


def rss_bytes(pid: int) -> int:
    """VmRSS of one process, 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakRSS:
    """Samples a process tree every ``every`` seconds until stopped; keeps the peaks.

    ``max_process`` is the largest resident size any single process of the tree
    reached (the figure a per-process memory limit applies to); ``max_total``
    the largest sum over the tree at one sample.
    """

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.pid = pid
        self.every = every
        self.max_process = 0
        self.max_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        sizes = [rss_bytes(p) for p in tree(self.pid)]
        self.max_process = max(self.max_process, *sizes, 0)
        self.max_total = max(self.max_total, sum(sizes))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)
