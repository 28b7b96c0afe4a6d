"""The write-back applied twice changes nothing; a later genuine attempt still records.

A write-back whose COMMIT succeeded but whose acknowledgement was lost (the
connection dropped after commit) is retried by the deliverer. The lost
acknowledgement is made real and deterministic here: the database connection
goes through :class:`CommitCutter`, a TCP relay in front of PostgreSQL that
closes the connection in place of forwarding the server's ``COMMIT`` reply of
a transaction that wrote attempt rows. The server has committed by then (it
answers COMMIT only after the commit is durable); the client sees a dropped
connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from channels.base import OutgoingMessage, Provider, Receipt
from channels.registry import Providers
from clarion.core.clock import utcnow
from clarion.core.db import make_engine, session_factory
from clarion.core.settings import Settings
from models.claims import Claims
from models.enums import AttemptOutcome, Channel, DeliveryStatus
from models.writeback import AttemptRecord, SendJob, WriteBack, WriteBackStore
from workers.batching import GroupCommitter
from workers.delivery import Deliverer, DeliveryStore, Result
from workers.retry_policy import RetryPolicy

pytestmark = pytest.mark.postgres

#: The CommandComplete tag PostgreSQL sends once a COMMIT is durable.
COMMIT_TAG = b"COMMIT\x00"
#: What marks a transaction as a write-back with attempts (client to server).
ATTEMPT_INSERT = b"INSERT INTO delivery_attempts"


class CommitCutter:
    """A TCP relay to PostgreSQL that can lose one write-back's COMMIT reply.

    While armed, the first connection that sent an INSERT into
    ``delivery_attempts`` and then receives the server's COMMIT reply is
    closed instead (both sides), and the relay disarms: exactly one write-back
    committed with its acknowledgement lost.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.armed = False
        self.cuts = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            _close(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self._sockets += [client, server]
            state = {"wrote_attempts": False}
            threading.Thread(
                target=self._client_to_server, args=(client, server, state), daemon=True
            ).start()
            threading.Thread(
                target=self._server_to_client, args=(server, client, state), daemon=True
            ).start()

    def _client_to_server(
        self, client: socket.socket, server: socket.socket, state: dict[str, bool]
    ) -> None:
        tail = b""
        while chunk := _recv(client):
            # The tail carries a marker split across two reads.
            if ATTEMPT_INSERT in tail + chunk:
                state["wrote_attempts"] = True
            tail = chunk[-len(ATTEMPT_INSERT) :]
            if not _send(server, chunk):
                break
        _close(client)
        _close(server)

    def _server_to_client(
        self, server: socket.socket, client: socket.socket, state: dict[str, bool]
    ) -> None:
        tail = b""
        while chunk := _recv(server):
            if COMMIT_TAG in tail + chunk:
                with self._lock:
                    cut = self.armed and state["wrote_attempts"]
                    if cut:
                        self.armed = False
                        self.cuts += 1
                state["wrote_attempts"] = False
                if cut:
                    break
            tail = chunk[-len(COMMIT_TAG) :]
            if not _send(client, chunk):
                break
        _close(client)
        _close(server)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture
def cutter(pg_url: str) -> Iterator[CommitCutter]:
    url = sa.make_url(pg_url)
    relay = CommitCutter((url.host or "127.0.0.1", url.port or 5432))
    yield relay
    relay.close()


@pytest.fixture
def cut_engine(pg_url: str, cutter: CommitCutter, clean_db: Engine) -> Iterator[Engine]:
    """An engine on the test database whose connections go through the cutter."""
    url = sa.make_url(pg_url).set(host="127.0.0.1", port=cutter.port)
    eng = make_engine(url.render_as_string(hide_password=False), poolclass=sa.NullPool)
    yield eng
    eng.dispose()


class Accepting(Provider):
    """An in-app provider that accepts every message and counts the calls."""

    name = "accepting"
    channel: ClassVar[Channel] = Channel.IN_APP

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def send(self, message: OutgoingMessage) -> Receipt:
        with self._lock:
            self.calls += 1
        return Receipt(self.name, f"m-{message.delivery_id.hex}", {"ok": True}, delivered=True)


def make_deliveries(engine: Engine, count: int) -> list[uuid.UUID]:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO notifications (user_id, notification_type, category, priority,"
                " title, message, delivery_channels) SELECT :u, 'in_app', 'bid', 'normal',"
                " 'T', 'M', '[\"in_app\"]'::jsonb FROM generate_series(1, :n)"
            ),
            {"u": uuid.uuid4(), "n": count},
        )
    claims = Claims(session_factory(engine)).claim_due(
        batch_size=count,
        lease_seconds=600,
        queue_for=lambda c, p: Channel(c).value,
        make_message=lambda d, q: uuid.uuid4().hex,
    )
    assert len(claims) == count
    return [c.delivery_id for c in claims]


def record(outcome: AttemptOutcome, error: str | None = None) -> AttemptRecord:
    return AttemptRecord(
        outcome=outcome,
        provider="accepting",
        started_at=utcnow(),
        duration_ms=1,
        response={"outcome": outcome.value},
        provider_message_id="m-1" if error is None else None,
        error=error,
    )


def take(store: WriteBackStore, delivery_id: uuid.UUID) -> SendJob:
    job = store.start_sending(delivery_id, lease_seconds=60)
    assert job is not None
    return job


def books(engine: Engine) -> list[tuple[object, ...]]:
    """Per delivery: status, attempts counted, attempt rows, the notification's count."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT d.status, d.attempts,"
                " (SELECT count(*) FROM delivery_attempts a WHERE a.delivery_id = d.delivery_id),"
                " n.delivery_attempts, d.take_token IS NULL"
                " FROM notification_deliveries d JOIN notifications n USING (notification_id)"
                " ORDER BY d.delivery_id"
            )
        ).all()
    return [tuple(r) for r in rows]


def test_a_write_back_applied_twice_writes_once(clean_db: Engine) -> None:
    [delivery_id] = make_deliveries(clean_db, 1)
    store = WriteBackStore(clean_db)
    item = WriteBack(
        take(store, delivery_id), (record(AttemptOutcome.DELIVERED),), DeliveryStatus.DELIVERED
    )
    store.write_back(item)
    store.write_back(item)  # the retry after a lost acknowledgement
    assert books(clean_db) == [("delivered", 1, 1, 1, True)]


def test_a_replayed_retry_counts_once_and_a_later_attempt_still_records(
    clean_db: Engine,
) -> None:
    [delivery_id] = make_deliveries(clean_db, 1)
    store = WriteBackStore(clean_db)
    failed = WriteBack(
        take(store, delivery_id),
        (record(AttemptOutcome.RETRYABLE, "RetryableError: 503"),),
        DeliveryStatus.QUEUED,
        error="RetryableError: 503",
        retry_at=utcnow(),
    )
    store.write_back(failed)
    store.write_back(failed)
    assert books(clean_db) == [("queued", 1, 1, 1, True)]

    # The genuine second attempt: a new take, a token of its own.
    second = take(store, delivery_id)
    assert second.take_token != failed.job.take_token
    assert second.attempts == 1
    store.write_back(
        WriteBack(second, (record(AttemptOutcome.DELIVERED),), DeliveryStatus.DELIVERED)
    )
    # A late replay of the first take's write-back is stale: it changes nothing.
    store.write_back(failed)
    assert books(clean_db) == [("delivered", 2, 2, 2, True)]


def test_the_same_write_back_twice_in_one_batch_writes_once(clean_db: Engine) -> None:
    ids = make_deliveries(clean_db, 2)
    store = WriteBackStore(clean_db)
    first, second = (take(store, i) for i in ids)
    items = [
        WriteBack(job, (record(AttemptOutcome.DELIVERED),), DeliveryStatus.DELIVERED)
        for job in (first, second)
    ]
    store.write_back_many([items[0], items[1], items[0]])
    assert books(clean_db) == [("delivered", 1, 1, 1, True)] * 2


def _deliverer(store: DeliveryStore, provider: Provider) -> Deliverer:
    return Deliverer(
        store,
        Providers(Settings(), {Channel.IN_APP: provider}),
        policy=RetryPolicy(min_backoff=0.01, max_backoff=0.02),
        lease_seconds=120,
    )


def test_a_commit_whose_acknowledgement_is_lost_is_not_applied_twice(
    cut_engine: Engine, cutter: CommitCutter, clean_db: Engine
) -> None:
    [delivery_id] = make_deliveries(clean_db, 1)
    provider = Accepting()
    cutter.armed = True
    outcome = _deliverer(WriteBackStore(cut_engine), provider).deliver(delivery_id)
    assert outcome.result is Result.DELIVERED
    assert cutter.cuts == 1  # the write-back's COMMIT reply really was lost
    assert provider.calls == 1
    assert books(clean_db) == [("delivered", 1, 1, 1, True)]


def test_group_commit_retrying_a_batch_whose_acknowledgement_was_lost_counts_once(
    cut_engine: Engine, cutter: CommitCutter, clean_db: Engine
) -> None:
    ids = make_deliveries(clean_db, 8)
    provider = Accepting()
    committer = GroupCommitter(WriteBackStore(cut_engine))
    d = _deliverer(committer, provider)
    cutter.armed = True
    start = threading.Barrier(len(ids))
    try:
        with ThreadPoolExecutor(len(ids), initializer=start.wait) as pool:
            outcomes = list(pool.map(d.deliver, ids))
    finally:
        committer.close()
    assert [o.result for o in outcomes] == [Result.DELIVERED] * len(ids)
    assert cutter.cuts == 1  # one batch's COMMIT reply was lost; its callers retried
    assert provider.calls == len(ids)
    assert books(clean_db) == [("delivered", 1, 1, 1, True)] * len(ids)
