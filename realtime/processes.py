"""``clarion gateway --processes N``: N gateway processes serving one port.

A single asyncio process uses one core. The parent forks N children; each
is a whole :class:`realtime.gateway.Gateway` (its own Redis subscription,
subscription index, database engine, jobs) whose listening socket is bound
with ``SO_REUSEPORT``, so the kernel spreads new connections over them. The
parent serves nothing: it waits until every child listens, prints
``clarion gateway listening on HOST:PORT (N processes)``, and then

* on SIGTERM or SIGINT sends SIGTERM to every child (each closes its
  connections with 1001 and writes its final rows, as a lone gateway does),
  waits for all of them and exits 0;
* restarts a child that died without being asked to (a crash, ``kill -9``):
  its clients reconnect to the others and resume, and the sweep closes its
  rows once their heartbeat is old.

A child asks the kernel for SIGTERM if its parent dies (``PR_SET_PDEATHSIG``),
so a parent killed with ``kill -9`` leaves no gateway behind.

Several processes need nothing more than several gateways behind a load
balancer already do: every process gets every event from Redis and sends it
to its own connections; each writes its own connection rows; event stats
are merged under row locks; the outbox relay claims rows with ``SKIP
LOCKED`` (one publish per event); the sweep only closes rows whose heartbeat
is older than three intervals, which a live process's rows never are.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from multiprocessing.connection import Connection as Pipe
from multiprocessing.process import BaseProcess

from clarion.core.settings import Settings

log = logging.getLogger("clarion.realtime.gateway")

#: Seconds the children have to start listening.
START_TIMEOUT = 60.0
#: Seconds the children have to stop after SIGTERM before they are killed.
STOP_TIMEOUT = 60.0
#: Seconds between restarts of a child that keeps dying.
RESTART_DELAY = 1.0
_PR_SET_PDEATHSIG = 1


def _child(settings: Settings, ready: Pipe) -> None:
    """One gateway process: the parent's death is its SIGTERM."""
    from realtime.gateway import Gateway

    # The parent's handlers only set its own flag: until the gateway's loop installs its
    # own, SIGTERM and SIGINT end this process at once.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before prctl took effect
        return

    def say_ready() -> None:
        # A replacement's parent is not listening any more: nothing to tell it.
        with contextlib.suppress(OSError):
            ready.send(os.getpid())
        ready.close()

    asyncio.run(Gateway(settings, reuse_port=True).run(ready=say_ready))


class Supervisor:
    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        self.ctx = mp.get_context("fork")  # nothing runs yet in the parent: no thread, no loop
        self.children: list[BaseProcess | None] = [None] * count
        self.stopping = False

    def _start(self, slot: int) -> Pipe:
        receive, send = self.ctx.Pipe(duplex=False)
        process = self.ctx.Process(
            target=_child, args=(self.settings, send), name=f"gateway-{slot}", daemon=False
        )
        process.start()
        send.close()
        self.children[slot] = process
        return receive

    def _stop_soon(self, _signum: int, _frame: object) -> None:
        self.stopping = True

    def run(self) -> int:
        s = self.settings
        signal.signal(signal.SIGTERM, self._stop_soon)
        signal.signal(signal.SIGINT, self._stop_soon)
        pipes = [self._start(slot) for slot in range(self.count)]
        deadline = time.monotonic() + START_TIMEOUT
        for slot, pipe in enumerate(pipes):
            child = self.children[slot]
            assert child is not None
            started = False
            while not self.stopping and not started:
                if pipe.poll(0.1):
                    try:
                        started = bool(pipe.recv())
                    except EOFError:  # it died before it listened
                        child.join(5)
                if not started and (not child.is_alive() or time.monotonic() > deadline):
                    log.error("gateway process %d did not start (exit %s)", slot, child.exitcode)
                    self._stop_all()
                    return 1
            pipe.close()
        if not self.stopping:
            print(
                f"clarion gateway listening on {s.gateway_host}:{s.gateway_port} "
                f"({self.count} processes)",
                flush=True,
            )
        while not self.stopping:
            time.sleep(0.2)
            for slot, child in enumerate(self.children):
                if child is not None and not child.is_alive() and not self.stopping:
                    log.warning(
                        "gateway process %d (pid %s) exited %s; starting another",
                        slot,
                        child.pid,
                        child.exitcode,
                    )
                    time.sleep(RESTART_DELAY)
                    if not self.stopping:
                        self._start(slot).close()
        self._stop_all()
        return 0

    def _stop_all(self) -> None:
        live = [c for c in self.children if c is not None and c.is_alive()]
        for child in live:
            if child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in live:
            child.join(max(0.0, deadline - time.monotonic()))
            if child.is_alive():
                log.error("gateway process %s did not stop in time; killing it", child.pid)
                child.kill()
                child.join()


def run_processes(settings: Settings, count: int) -> None:
    """Run ``count`` gateway processes on the settings' port until SIGTERM/SIGINT."""
    code = Supervisor(settings, count).run()
    if code:
        raise SystemExit(code)
