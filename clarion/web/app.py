"""The ASGI application of ``clarion web``: routes, error answers, sessions, health.

``create_app(settings)`` builds it with settings read at the entry point;
uvicorn's ``--workers`` processes call :func:`app_from_env` (a factory) and
each builds its own engine and clients in its lifespan, closed on shutdown.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.middleware.sessions import SessionMiddleware

from clarion import __version__
from clarion.core.settings import Settings, get_settings
from clarion.web import app_api, console, inbox_api, problems, receipts, users_api
from clarion.web.context import build_context
from clarion.web.guards import Guards

log = logging.getLogger("clarion.web")

DESCRIPTION = """Clarion over HTTP.

* **Application API** (`/v1/notifications`, `/v1/events`): API keys made by
  `clarion apikey create`, as `Authorization: Bearer clk_...`, scoped
  `send` (create), `read` (read back), `operate` (the console).
* **Users** (`/v1/users/{id}/locale`, `/v1/users/{id}/preferences`, `/v1/cancel`):
  API keys, `send` to write, `read` to read, `operate` for both.
* **Inbox API** (`/v1/inbox`): the user's HS256 JWT, the same as the real-time
  gateway's, as `Authorization: Bearer <JWT>`.

Errors are RFC 9457 problem details (`application/problem+json`); a
validation error names the field in `field`.
"""


def create_app(settings: Settings) -> FastAPI:
    """The ASGI app over ``settings`` (engine and clients are made at start-up)."""
    ctx = build_context(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("clarion web ready")
        try:
            yield
        finally:
            ctx.close()
            log.info("clarion web stopped")

    app = FastAPI(
        title="Clarion",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.clarion = ctx
    problems.install(app)
    app.add_middleware(
        SessionMiddleware,
        secret_key=ctx.session_secret,
        session_cookie="clarion_console",
        max_age=int(settings.web_session_hours * 3600),
        path="/console",
        same_site="strict",
        https_only=settings.web_secure_cookies,
    )

    # Outermost: a body too large is refused before anything reads it.
    app.add_middleware(Guards)

    @app.exception_handler(console.SignedOut)
    async def _signed_out(request: Request, _exc: console.SignedOut) -> Response:
        if request.url.path.startswith("/console/status/panel"):
            return JSONResponse({"signed_in": False}, status_code=401)
        return RedirectResponse("/console/login", status_code=303)

    @app.get("/healthz", tags=["health"], summary="200 while the database answers")
    def healthz() -> JSONResponse:
        body: dict[str, Any] = {"database": "ok", "redis": "ok"}
        status = 200
        try:
            with ctx.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except Exception as exc:
            body["database"] = f"down: {type(exc).__name__}"
            status = 503
        try:
            ctx.redis.ping()
        except Exception as exc:
            # Only badges and events need Redis: the API keeps answering without it.
            body["redis"] = f"down: {type(exc).__name__}"
        return JSONResponse(body, status_code=status)

    # Imported here, not at the top: the CLI builds its parser from clarion.web, and
    # prometheus_client must not be imported before clarion worker sets up its
    # processes' shared samples (see workers.exposition).
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from clarion.metrics import web_registry

    registry = web_registry(settings, engine=ctx.engine)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """Prometheus text: notifications created here, the farm's gauges, the process."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(app_api.router)
    app.include_router(users_api.router)
    app.include_router(inbox_api.router)
    app.include_router(console.router)
    app.include_router(receipts.router)
    return app


def app_from_env() -> FastAPI:
    """The factory uvicorn's worker processes call (``clarion web --workers N``)."""
    from clarion.core.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level)
    return create_app(settings)
