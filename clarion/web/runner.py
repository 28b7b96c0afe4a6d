"""Running ``clarion web`` on uvicorn.

uvicorn handles SIGTERM and SIGINT gracefully: it stops accepting, lets the
requests in flight finish (at most ``GRACEFUL_SECONDS``), runs the
application's shutdown (engine and Redis closed) and exits 0.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import uvicorn

from clarion.core.settings import Settings

#: Seconds requests in flight get to finish on SIGTERM.
GRACEFUL_SECONDS = 20
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def serve(settings: Settings, *, host: str, port: int, workers: int) -> None:
    from clarion.core.logging import configure_logging

    configure_logging(settings.log_level)
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "timeout_graceful_shutdown": GRACEFUL_SECONDS,
        "log_level": settings.log_level.lower(),
        "access_log": False,  # paths carry ids, never bodies; keep the log for errors
        "proxy_headers": False,
    }
    if workers > 1:
        uvicorn.run("clarion.web.app:app_from_env", factory=True, workers=workers, **common)
        return
    from clarion.web.app import create_app

    config = uvicorn.Config(create_app(settings), **common)
    _Server(config).run()


class _Server(uvicorn.Server):
    """uvicorn's server, exiting 0 after a graceful SIGTERM/SIGINT.

    uvicorn re-raises the signal once it has shut down, so the process would
    die of it (status -15); Clarion's daemons exit 0 when asked to stop.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
