"""Group commit: concurrent callers share batches, each gets its own result or the batch's error."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Hashable, Sequence

import pytest

from realtime.grouping import GroupCommit


class Recorder:
    """A commit function that records its batches; the first one waits until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, key: Hashable, items: Sequence[int]) -> list[str]:
        with self.lock:
            self.batches.append(list(items))
            first = len(self.batches) == 1
        if first:
            self.release.wait(10)
        if -1 in items:
            raise ValueError("bad item in the batch")
        return [f"{key}:{i}" for i in items]


def test_callers_queued_behind_a_commit_in_flight_share_one_batch() -> None:
    commit = Recorder()
    group: GroupCommit[int, str] = GroupCommit(commit, lanes=1)
    out: dict[int, str] = {}
    threads = [
        threading.Thread(target=lambda i=i: out.__setitem__(i, group.run("k", i))) for i in range(6)
    ]
    for t in threads:
        t.start()
        time.sleep(0.05)
    commit.release.set()
    for t in threads:
        t.join(10)
    # The first commits alone; the five that came while it was in flight go in together.
    assert commit.batches == [[0], [1, 2, 3, 4, 5]]
    assert out == {i: f"k:{i}" for i in range(6)}


def test_a_lone_caller_commits_at_once() -> None:
    batches: list[list[int]] = []
    group: GroupCommit[int, int] = GroupCommit(
        lambda _k, items: batches.append(list(items)) or [i * 2 for i in items]
    )
    assert [group.run("k", i) for i in range(3)] == [0, 2, 4]
    assert batches == [[0], [1], [2]]


def test_a_failed_batch_raises_in_each_of_its_callers_only() -> None:
    commit = Recorder()
    group: GroupCommit[int, str] = GroupCommit(commit, lanes=1)
    out: dict[int, object] = {}

    def one(i: int) -> None:
        try:
            out[i] = group.run("k", i)
        except ValueError as exc:
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in (0, 1, -1)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    commit.release.set()
    for t in threads:
        t.join(10)
    assert commit.batches == [[0], [1, -1]]
    assert out[0] == "k:0"
    assert isinstance(out[1], ValueError) and isinstance(out[-1], ValueError)
    # The group still works after a failure.
    assert group.run("k", 7) == "k:7"


def test_a_second_lane_passes_a_batch_stuck_in_the_database() -> None:
    commit = Recorder()
    group: GroupCommit[int, str] = GroupCommit(commit, lanes=2)
    out: dict[int, str] = {}
    first = threading.Thread(target=lambda: out.__setitem__(0, group.run("k", 0)))
    first.start()
    time.sleep(0.05)
    # The first batch is stuck; the others still commit, on the second lane.
    assert [group.run("k", i) for i in (1, 2)] == ["k:1", "k:2"]
    assert 0 not in out
    commit.release.set()
    first.join(10)
    assert out[0] == "k:0"


def test_keys_are_batched_apart() -> None:
    seen: list[tuple[Hashable, list[int]]] = []
    group: GroupCommit[int, int] = GroupCommit(
        lambda key, items: seen.append((key, list(items))) or list(items)
    )
    assert group.run("a", 1) == 1 and group.run("b", 2) == 2
    assert seen == [("a", [1]), ("b", [2])]


def test_many_callers_each_get_their_own_result() -> None:
    def commit(_key: Hashable, items: Sequence[int]) -> list[int]:
        time.sleep(0.002)
        return [i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit(commit, max_batch=4)
    out: dict[int, int] = {}

    def caller(base: int) -> None:
        for i in range(base, base + 25):
            out[i] = group.run("k", i)

    threads = [threading.Thread(target=caller, args=(b * 100,)) for b in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert out == {b * 100 + i: (b * 100 + i) * 10 for b in range(8) for i in range(25)}


@pytest.mark.parametrize("lanes", [1, 2])
def test_results_match_items_in_every_batch(lanes: int) -> None:
    def commit(_key: Hashable, items: Sequence[int]) -> list[int]:
        time.sleep(0.001)
        return [-i for i in items]

    group: GroupCommit[int, int] = GroupCommit(commit, lanes=lanes)
    out: dict[int, int] = {}
    threads = [
        threading.Thread(target=lambda i=i: out.__setitem__(i, group.run("k", i)))
        for i in range(40)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert out == {i: -i for i in range(40)}


def test_a_forked_child_does_not_wait_for_the_parents_leaders() -> None:
    commit = Recorder()
    group: GroupCommit[int, str] = GroupCommit(commit, lanes=1)
    stuck = threading.Thread(target=group.run, args=("k", 0))
    stuck.start()
    time.sleep(0.05)  # the parent's only lane is in flight
    pid = os.fork()
    if pid == 0:  # the child: its own commit, with no leader of the parent's to wait for
        done: list[str] = []
        t = threading.Thread(target=lambda: done.append(group.run("k", 5)), daemon=True)
        t.start()
        t.join(5)
        os._exit(0 if done == ["k:5"] else 1)
    _, status = os.waitpid(pid, 0)
    commit.release.set()
    stuck.join(10)
    assert os.waitstatus_to_exitcode(status) == 0
