"""What the tiers that run real Clarion processes share: polling, the processes, the brokers.

The pipeline, operators and real-time tiers each start ``clarion`` subprocesses
from this virtualenv and wait for their effects in the database, the broker or
a sandbox. The rules of that are written once here: how long and how often to
poll, how a worker or scheduler is started, judged ready and stopped, the
environment a subprocess gets, how a broker is emptied between tests.

Not a conftest.py, for the reason given in ``tests/testdb.py``: a bare
``conftest`` import is shadowed by whichever conftest was imported first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from models.enums import Channel
from models.notifications import Delivery, Notification

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
CLARION = str(Path(sys.executable).with_name("clarion"))

#: How long ``wait_until`` waits when a caller does not say (tiers may bind their own).
WAIT_TIMEOUT = 15.0
#: Seconds between two looks at what ``wait_until`` waits for.
POLL_INTERVAL = 0.05
#: Seconds a process gets to log that it is up.
READY_TIMEOUT = 30.0
#: Seconds the processes of a stack get to stop on SIGTERM before they are killed.
STOP_TIMEOUT = 20.0

WORKER_READY = "Worker process is ready for action"
SCHEDULER_READY = "scheduler started"


def wait_until(
    predicate: Callable[[], T],
    timeout: float = WAIT_TIMEOUT,
    what: str = "",
    *,
    interval: float = POLL_INTERVAL,
) -> T:
    """Poll ``predicate`` until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate}")
        time.sleep(interval)


def clarion_env(aws_dir: Path, settings: Mapping[str, str]) -> dict[str, str]:
    """The environment of a Clarion subprocess: this one's without any of its
    ``CLARION_*`` or provider credentials (an AWS config of its own, empty), with the
    metrics endpoints off, plus ``settings``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CLARION_", "AWS_", "TWILIO_", "GOOGLE_"))
    }
    env.update(
        {
            "AWS_CONFIG_FILE": str(aws_dir / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(aws_dir / "credentials"),
            "PYTHONUNBUFFERED": "1",
            # Many workers and schedulers run side by side in the tests: no
            # /metrics endpoint on the default ports unless a test asks for one.
            "CLARION_WORKER_METRICS_PORT": "0",
            "CLARION_SCHEDULER_METRICS_PORT": "0",
        }
    )
    env.update(settings)
    return env


def reset_broker(url: str) -> None:
    """Empty a test broker: flush its Redis DB, or purge Clarion's RabbitMQ queues
    (with their delay and dead-letter queues; the vhost is not ours alone)."""
    if url.startswith("amqp"):
        import pika

        from workers.queues import all_queues

        conn = pika.BlockingConnection(pika.URLParameters(url))
        try:
            for q in all_queues():
                for name in (q, f"{q}.DQ", f"{q}.XQ"):
                    channel = conn.channel()
                    with contextlib.suppress(pika.exceptions.ChannelClosedByBroker):
                        channel.queue_purge(name)
                    if channel.is_open:
                        channel.close()
        finally:
            conn.close()
    else:
        import redis

        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()


# --- processes -----------------------------------------------------------------------


@dataclasses.dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    ready_text: str
    returncode: int | None = None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Stack:
    """Clarion processes started by a test; stopped with SIGTERM (then SIGKILL)."""

    #: Every stack still running, for the failure report (see tests/conftest.py).
    active: list[Stack] = []  # noqa: RUF012

    def __init__(
        self, env: dict[str, str], log_dir: Path, name: str = "stack", *, worker_threads: int = 8
    ) -> None:
        self.env = env
        self.log_dir = log_dir
        self.name = name
        self.worker_threads = worker_threads
        self.processes: list[Process] = []
        Stack.active.append(self)

    def _spawn(self, kind: str, args: Sequence[str], ready_text: str) -> Process:
        index = sum(1 for p in self.processes if p.name.startswith(kind))
        name = f"{kind}{index}"
        log = self.log_dir / f"{self.name}-{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [CLARION, *args],
                env=self.env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: a stuck worker is killed with its children
            )
        process = Process(name, popen, log, ready_text)
        self.processes.append(process)
        return process

    def scheduler(self, *args: str) -> Process:
        """``clarion scheduler`` with ``args`` (e.g. ``--port N``)."""
        return self._spawn("scheduler", ["scheduler", *args], SCHEDULER_READY)

    def worker(self, processes: int = 1, threads: int | None = None, *args: str) -> Process:
        """``clarion worker`` with ``args`` after the process and thread counts."""
        threads = self.worker_threads if threads is None else threads
        return self._spawn(
            "worker",
            ["worker", "--processes", str(processes), "--threads", str(threads), *args],
            WORKER_READY,
        )

    def start(self, *, worker: bool = True, scheduler: bool = True) -> Stack:
        """Start a worker (one process) and/or a scheduler and wait until they are up."""
        if worker:
            self.worker()
        if scheduler:
            self.scheduler()
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait until each process logged that it is up (a worker: each of its children)."""
        for process in self.processes:

            def ready(p: Process = process) -> bool:
                if p.popen.poll() is not None:
                    raise AssertionError(
                        f"{p.name} exited with {p.popen.returncode}:\n{p.text()[-3000:]}"
                    )
                return p.ready_text in p.text()

            wait_until(ready, timeout=timeout, what=f"{process.name} to start")

    def stop(self) -> dict[str, int]:
        """SIGTERM every process, wait, SIGKILL the stragglers; returns the exit codes."""
        for process in self.processes:
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in self.processes:
            try:
                process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.popen.pid, signal.SIGKILL)
                process.popen.wait()
            process.returncode = process.popen.returncode
        if self in Stack.active:
            Stack.active.remove(self)
        return {p.name: p.popen.returncode for p in self.processes}

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.text()[-6000:]}" for p in self.processes)


def assert_clean_exit(codes: dict[str, int], stack: Stack) -> None:
    """Schedulers and workers alike stop cleanly, exit status 0, on SIGTERM."""
    for name, code in codes.items():
        assert code == 0, f"{name} exited {code} on SIGTERM\n{stack.logs()}"


# --- rows ------------------------------------------------------------------------------


class Rows:
    """Reading a notification and its deliveries back from the test database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    def notification(self, notification_id: uuid.UUID) -> Notification:
        with self.sessions() as s:
            return s.get_one(Notification, notification_id)

    def deliveries(self, notification_id: uuid.UUID) -> dict[str, Delivery]:
        """The notification's deliveries by channel name."""
        with self.sessions() as s:
            rows = s.scalars(
                sa.select(Delivery).where(Delivery.notification_id == notification_id)
            ).all()
        return {Channel(r.channel).value: r for r in rows}
