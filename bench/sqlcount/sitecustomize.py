"""Counts the SQL statements and commits of every process started with this directory
on PYTHONPATH (``python -m bench dbwork``), by SQLAlchemy events on every engine.

Counts go to the Redis hash ``CLARION_SQLCOUNT_KEY`` at ``CLARION_SQLCOUNT_REDIS``
every 0.2 s from a thread, restarted in forked children (Dramatiq's worker
processes), whose inherited counts start again from zero.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import os
import threading

KEY = os.environ.get("CLARION_SQLCOUNT_KEY")
URL = os.environ.get("CLARION_SQLCOUNT_REDIS")

if KEY and URL:
    import redis
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    _counts: collections.Counter[str] = collections.Counter()
    _lock = threading.Lock()

    @event.listens_for(Engine, "before_cursor_execute")
    def _statement(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
        if verb == "WITH":
            # A CTE: count it by what it ends up doing.
            upper = statement.upper()
            verb = next((v for v in ("INSERT", "UPDATE", "DELETE") if v in upper), "SELECT")
        # An executemany is one call from the client but one statement per parameter
        # set for the server (psycopg pipelines them): both are counted.
        sets = len(parameters) if executemany and parameters else 1
        with _lock:
            _counts[verb] += 1
            _counts["statements"] += 1
            _counts["statements_server"] += sets

    @event.listens_for(Engine, "commit")
    def _commit(conn):  # type: ignore[no-untyped-def]
        with _lock:
            _counts["commits"] += 1

    def _flush(client: redis.Redis) -> None:
        with _lock:
            taken = dict(_counts)
            _counts.clear()
        if taken:
            pipe = client.pipeline()
            for name, n in taken.items():
                pipe.hincrby(KEY, name, n)
            pipe.execute()

    def _loop() -> None:
        client = redis.Redis.from_url(URL)
        stop = threading.Event()
        atexit.register(lambda: _flush(client))
        while not stop.wait(0.2):
            with contextlib.suppress(redis.RedisError):  # a lost tick: the figure runs low
                _flush(client)

    def _start() -> None:
        threading.Thread(target=_loop, name="sqlcount", daemon=True).start()

    def _child() -> None:
        global _lock
        _lock = threading.Lock()  # another thread may have held it at the fork
        _counts.clear()  # the parent reports its own
        _start()

    os.register_at_fork(after_in_child=_child)
    _start()
