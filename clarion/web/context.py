"""What every request of ``clarion web`` shares: settings, the engine, clients.

Built once per process from the settings handed to
:func:`clarion.web.app.create_app` (settings are read at the entry point and
passed down) and kept on ``app.state.clarion``.
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

import redis
import sqlalchemy as sa
from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker

from clarion.core.db import make_engine, session_factory
from clarion.core.settings import Settings
from models.apikeys import ApiKeys
from models.inbox import Inbox
from realtime.outbox import Outlet


@dataclasses.dataclass
class WebContext:
    settings: Settings
    engine: sa.Engine
    sessions: sessionmaker[Session]
    keys: ApiKeys
    inbox: Inbox
    redis: redis.Redis
    session_secret: str

    @property
    def outlet(self) -> Outlet:
        return Outlet(self.redis, self.settings.events_channel)

    def close(self) -> None:
        self.redis.close()
        self.engine.dispose()


def build_context(settings: Settings) -> WebContext:
    url = settings.effective_database_url
    kwargs: dict[str, Any] = {}
    if not url.startswith("sqlite"):
        # Routes run in uvicorn's thread pool (40 threads): the pool serves them
        # without each opening a connection of its own.
        kwargs = {"pool_size": 10, "max_overflow": 30, "pool_pre_ping": True}
    engine = make_engine(url, **kwargs)
    sessions = session_factory(engine)
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    return WebContext(
        settings=settings,
        engine=engine,
        sessions=sessions,
        keys=ApiKeys(sessions),
        inbox=Inbox(sessions),
        redis=client,
        session_secret=settings.web_session_secret or secrets.token_urlsafe(32),
    )


def context(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.clarion
    return ctx
