"""The scheduler under database and broker faults, against real processes.

Each scenario runs a real ``clarion worker`` and ``clarion scheduler`` on the
session's PostgreSQL database, breaks something under load, and then checks
the books: every notification delivered, and the webhook sandbox's requests
counted per notification (a duplicate send shows up as a second request).

The scheduler's database sessions carry an ``application_name`` of their own
so that ``pg_terminate_backend`` hits only them; the broker of the Redis
scenario is a ``redis-server`` of the test's own (port 6411), stopped and
started by the test.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from harness import Process, wait_until
from pipekit import Pipeline, StackFactory, User
from testdb import ADMIN_URL

# The fixtures (sandboxes, stacks, pl) are tests/pipekit.py's, through tests/chaos/conftest.py.

# Long scenarios of real processes under faults: the default 120 s guard against
# a hang is too close to their duration on a loaded machine.
pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(300)]

SCHEDULER_APP = "clarion-chaos-scheduler"
WORKER_APP = "clarion-chaos-worker"
OWN_REDIS_PORT = 6411
#: Seconds any one scenario may take to settle once its fault is over.
SETTLE = 90.0


# --- helpers ---------------------------------------------------------------------------


def scheduler_url(pg_url: str, app: str = SCHEDULER_APP) -> str:
    """The database URL with an application_name of its own (the scheduler's by default)."""
    url = sa.make_url(pg_url)
    return url.update_query_dict({"application_name": app}).render_as_string(hide_password=False)


def admin_engine() -> sa.Engine:
    return sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)


def terminate_scheduler_sessions(admin: sa.Engine, database: str, app: str = SCHEDULER_APP) -> int:
    with admin.connect() as conn:
        return len(
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :app AND datname = :db"
                ),
                {"app": app, "db": database},
            ).all()
        )


def terminate_some(admin: sa.Engine, database: str, app: str) -> int:
    """Terminate the sessions of ``app``, waiting until it has one: right after a
    round it may not have reconnected yet, and a round that found none would test
    nothing."""
    return wait_until(
        lambda: terminate_scheduler_sessions(admin, database, app),
        timeout=30,
        what=f"a session of {app} to terminate",
    )


def listening(admin: sa.Engine, database: str) -> bool:
    """Whether the scheduler has a live LISTEN session (its last statement was LISTEN)."""
    with admin.connect() as conn:
        return bool(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = :app "
                    "AND datname = :db AND query LIKE 'LISTEN %'"
                ),
                {"app": SCHEDULER_APP, "db": database},
            ).scalar()
        )


def webhook_calls(pl: Pipeline, user: User) -> collections.Counter[str]:
    """Requests the webhook sandbox answered, by notification id."""
    return collections.Counter(
        str(d.payload["data"]["notification_id"])
        for d in pl.sandboxes.webhook.deliveries
        if d.request.path == user.webhook_path
    )


def wait_all_sent(pl: Pipeline, ids: list[uuid.UUID], timeout: float = SETTLE) -> None:
    wanted = [str(i) for i in ids]

    def done() -> bool:
        with pl.engine.connect() as conn:
            sent = conn.execute(
                sa.text(
                    "SELECT count(*) FROM notification_deliveries "
                    "WHERE notification_id = ANY(CAST(:ids AS uuid[])) "
                    "AND status IN ('sent', 'delivered')"
                ),
                {"ids": wanted},
            ).scalar()
        return sent == len(wanted)

    try:
        wait_until(done, timeout=timeout, what=f"{len(ids)} webhook deliveries to be sent")
    except AssertionError as exc:
        with pl.engine.connect() as conn:
            books = conn.execute(
                sa.text(
                    "SELECT n.status, d.status, count(*) FROM notifications n "
                    "LEFT JOIN notification_deliveries d USING (notification_id) "
                    "WHERE n.notification_id = ANY(CAST(:ids AS uuid[])) GROUP BY 1, 2"
                ),
                {"ids": wanted},
            ).all()
        raise AssertionError(f"{exc}; (notification, delivery) statuses: {books}") from None


def assert_books(pl: Pipeline, user: User, ids: list[uuid.UUID], *, most: int = 1) -> None:
    """Every notification reached the provider, and no more than ``most`` times."""
    calls = webhook_calls(pl, user)
    missing = [i for i in ids if calls[str(i)] == 0]
    over = {k: v for k, v in calls.items() if v > most}
    assert not missing, f"{len(missing)} notifications never reached the provider"
    assert not over, f"notifications sent more than {most} time(s): {over}"
    with pl.engine.connect() as conn:
        deliveries = conn.execute(
            sa.text(
                "SELECT count(*) FROM notification_deliveries "
                "WHERE notification_id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": [str(i) for i in ids]},
        ).scalar()
    assert deliveries == len(ids), f"{deliveries} deliveries for {len(ids)} notifications"


def alive(process: Process) -> None:
    assert process.popen.poll() is None, (
        f"{process.name} exited with {process.popen.returncode}:\n{process.text()[-3000:]}"
    )


class Feeder:
    """Creates notifications in small batches from a thread until stopped."""

    def __init__(self, pl: Pipeline, user: User, *, per_batch: int = 5, pause: float = 0.1):
        self.pl = pl
        self.user = user
        self.per_batch = per_batch
        self.pause = pause
        self.ids: list[uuid.UUID] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.ids.extend(self.pl.insert(self.user, ["webhook"], count=self.per_batch))
                self._stop.wait(self.pause)
        except BaseException as exc:  # reported by stop(), on the test's thread
            self.error = exc

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[uuid.UUID]:
        self._stop.set()
        self._thread.join(timeout=30)
        if self.error is not None:
            raise self.error
        return self.ids

    def wait_for(self, count: int) -> None:
        wait_until(lambda: len(self.ids) >= count, timeout=60, what=f"{count} notifications")


@pytest.fixture
def database(pg_url: str) -> str:
    name = sa.make_url(pg_url).database
    assert name is not None
    return name


@pytest.fixture
def admin() -> Iterator[sa.Engine]:
    engine = admin_engine()
    yield engine
    engine.dispose()


# --- (a) sessions terminated under load --------------------------------------------------


def test_scheduler_survives_its_sessions_terminated_under_load(
    stacks: StackFactory, pl: Pipeline, pg_url: str, database: str, admin: sa.Engine
) -> None:
    workers = stacks("workers").start(scheduler=False)
    # A short queued lease: a claim whose commit went through while its
    # session was killed (acknowledgement lost) has no message; the sweep sends it.
    sched_stack = stacks(
        "sched",
        CLARION_DATABASE_URL=scheduler_url(pg_url),
        CLARION_QUEUED_LEASE_SECONDS="5",
        CLARION_BATCH_SIZE="10",
    )
    scheduler = sched_stack.scheduler()
    sched_stack.wait_ready()
    user = pl.user(webhook=True)

    terminated = 0
    with Feeder(pl, user) as feeder:
        for round_ in range(15):
            feeder.wait_for(10 * (round_ + 1))
            terminated += terminate_some(admin, database, SCHEDULER_APP)
            alive(scheduler)
        ids = feeder.stop()

    assert terminated >= 15, "the scheduler's sessions were never found to terminate"
    wait_all_sent(pl, ids)
    alive(scheduler)
    assert_books(pl, user, ids)
    # Whether a termination surfaces in the loop or is absorbed by the pool's
    # pre-ping depends on timing, so the log is not required to mention it; when
    # it does, it is once per outage, not once per try.
    log = scheduler.text()
    assert log.count("database unavailable") < terminated, "logged once per try, not per outage"
    alive(workers.processes[0])


def test_workers_survive_their_sessions_terminated_under_load(
    stacks: StackFactory, pl: Pipeline, pg_url: str, database: str, admin: sa.Engine
) -> None:
    # The guard, the group commit's write-backs and the address reads lose their
    # connections mid-transaction; a take whose acknowledgement was lost is sent
    # by the lease sweep, hence a short lease.
    lease = {"CLARION_LEASE_SECONDS": "5"}
    workers = stacks(
        "workers", CLARION_DATABASE_URL=scheduler_url(pg_url, WORKER_APP), **lease
    ).start(scheduler=False)
    stacks("sched", **lease).start(worker=False)
    user = pl.user(webhook=True)

    terminated = 0
    with Feeder(pl, user) as feeder:
        for round_ in range(15):
            feeder.wait_for(10 * (round_ + 1))
            terminated += terminate_some(admin, database, WORKER_APP)
            alive(workers.processes[0])
        ids = feeder.stop()

    assert terminated >= 15, "the workers' sessions were never found to terminate"
    wait_all_sent(pl, ids)
    alive(workers.processes[0])
    # Lost nothing; sent nothing twice: a write-back retried after its commit
    # applies once, and a take that was lost is sent by the sweep, once.
    assert_books(pl, user, ids)


# --- (b) LISTEN comes back --------------------------------------------------------------


def test_listen_is_reestablished_after_its_session_is_lost_and_a_reconnect_failed(
    stacks: StackFactory, pl: Pipeline, pg_url: str, database: str, admin: sa.Engine
) -> None:
    stacks("workers").start(scheduler=False)
    # Polling alone would take up to 30 s: a quick pick-up can only be NOTIFY's.
    sched_stack = stacks(
        "sched", CLARION_DATABASE_URL=scheduler_url(pg_url), CLARION_POLL_INTERVAL="30"
    )
    scheduler = sched_stack.scheduler()
    sched_stack.wait_ready()
    wait_until(lambda: listening(admin, database), timeout=30, what="the first LISTEN")
    user = pl.user(webhook=True)

    # The database refuses new sessions, then the scheduler's are cut: its
    # first reconnection fails, as it would while a restarted server is still down.
    with admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    try:
        wait_until(
            lambda: (
                terminate_scheduler_sessions(admin, database) == 0
                and re.search(r"LISTEN .*unavailable", scheduler.text()) is not None
            ),
            timeout=30,
            what="a failed LISTEN reconnection",
            interval=0.2,
        )
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')

    wait_until(lambda: listening(admin, database), timeout=30, what="LISTEN to come back")
    (notification_id,) = pl.insert(user, ["webhook"])
    # Well under the 30 s poll: woken by the INSERT's NOTIFY.
    pl.wait_final(notification_id, 1, timeout=10)
    alive(scheduler)
    assert_books(pl, user, [notification_id])


# --- (c) the broker's Redis stopped and started -------------------------------------------


class OwnRedis:
    """A redis-server of the test's own on OWN_REDIS_PORT."""

    def __init__(self, directory: Path, *, persistent: bool) -> None:
        self.directory = directory
        self.persistent = persistent
        self.popen: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{OWN_REDIS_PORT}/0"

    def start(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            pytest.skip("redis-server is not installed")
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persistent
            else ["--save", "", "--appendonly", "no"]
        )
        self.popen = subprocess.Popen(
            [
                server,
                *("--port", str(OWN_REDIS_PORT), "--bind", "127.0.0.1"),
                *("--dir", str(self.directory), *persistence),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.answers, timeout=20, what="the test's redis-server")

    def answers(self) -> bool:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self.popen is None:
            return
        self.popen.send_signal(signal.SIGTERM)  # saves the AOF when persistent
        self.popen.wait(timeout=30)
        self.popen = None


@pytest.fixture
def own_redis(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path, persistent=request.param)
    server.start()
    try:
        yield server
    finally:
        if server.popen is not None:
            server.popen.kill()
            server.popen.wait()


@pytest.mark.parametrize(
    "own_redis", [True, False], ids=["with-data", "without-data"], indirect=True
)
def test_scheduler_backs_off_while_the_broker_is_down_and_catches_up(
    stacks: StackFactory, pl: Pipeline, own_redis: OwnRedis
) -> None:
    # The default queued lease (an hour): nothing may wait for the sweep.
    stack = stacks("redis", CLARION_BROKER_URL=own_redis.url, CLARION_BATCH_SIZE="10")
    stack.start()
    scheduler = next(p for p in stack.processes if p.name.startswith("scheduler"))
    user = pl.user(webhook=True)

    before = pl.insert(user, ["webhook"], count=30)
    # Drained first: what the broker held would be lost with it (without data).
    wait_all_sent(pl, before)

    own_redis.stop()
    during: list[uuid.UUID] = []
    with Feeder(pl, user, per_batch=5, pause=0.2) as feeder:
        wait_until(
            lambda: re.search(r"ERROR .*clarion\.scheduler", scheduler.text()) is not None,
            timeout=30,
            what="the scheduler to notice the broker is down",
        )
        feeder.wait_for(40)
        during = feeder.stop()
    alive(scheduler)
    own_redis.start()

    after = pl.insert(user, ["webhook"], count=30)
    ids = before + during + after
    wait_all_sent(pl, ids)
    alive(scheduler)
    assert_books(pl, user, ids)
    log = scheduler.text()
    # One outage, one line each way; the old per-message retry logged each message.
    assert log.count("broker unavailable") == 1, log[-3000:]
    assert log.count("broker available again") == 1, log[-3000:]


# --- (d) scheduler killed -----------------------------------------------------------------


def test_a_killed_scheduler_loses_nothing_and_sends_nothing_twice(
    stacks: StackFactory, pl: Pipeline
) -> None:
    # Claims committed by the killed scheduler but never enqueued wait for
    # the sweep of the next one: a short queued lease keeps that bounded.
    stack = stacks("kill", CLARION_QUEUED_LEASE_SECONDS="5", CLARION_BATCH_SIZE="10")
    stack.start()
    first = next(p for p in stack.processes if p.name.startswith("scheduler"))
    user = pl.user(webhook=True)
    with Feeder(pl, user) as feeder:
        feeder.wait_for(60)
        os.killpg(first.popen.pid, signal.SIGKILL)
        first.popen.wait(timeout=30)
        stack.processes.remove(first)  # killed on purpose: not a clean exit
        feeder.wait_for(100)
        second = stack.scheduler()
        stack.wait_ready()
        feeder.wait_for(150)
        ids = feeder.stop()
    wait_all_sent(pl, ids)
    alive(second)
    # The README's duplicate window is a killed worker's deliveries in flight:
    # a killed scheduler adds none.
    assert_books(pl, user, ids)


# --- (e) three schedulers -------------------------------------------------------------------


def test_three_schedulers_under_load_send_each_delivery_once(
    stacks: StackFactory, pl: Pipeline
) -> None:
    stack = stacks("three", CLARION_BATCH_SIZE="5")
    stack.worker()
    schedulers = [stack.scheduler() for _ in range(3)]
    stack.wait_ready()
    user = pl.user(webhook=True)
    with Feeder(pl, user, per_batch=10, pause=0.05) as feeder:
        feeder.wait_for(200)
        ids = feeder.stop()
    wait_all_sent(pl, ids)
    for process in schedulers:
        alive(process)
    assert_books(pl, user, ids)
