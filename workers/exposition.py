"""Prometheus text at ``/metrics`` over HTTP, for the daemons without a web server of their own.

``clarion scheduler`` serves its registry from a thread (:func:`serve_in_thread`).

``clarion worker`` is several processes forked by Dramatiq. Before the fork,
the parent:

1. creates a fresh directory for this run's samples and sets
   ``PROMETHEUS_MULTIPROC_DIR`` to it (:func:`new_samples_directory`),
   *before prometheus-client is first imported* (the library picks its
   multiprocess value class at import, and the children inherit the
   parent's choice; ``tests/unit/test_metrics_import_order.py`` keeps the
   command line from importing it early);
2. binds the listening socket (:func:`prepare_worker_run`), so that a port
   in use stops ``clarion worker`` at start-up with a message naming it
   (:meth:`Endpoint.cannot_bind`), instead of a log line in a child nobody
   reads.

Dramatiq then forks :func:`serve_worker_metrics` (``--fork-function``), which
serves the inherited socket and sums every process's files at each scrape.
The worker processes close their inherited copy of the socket
(:func:`close_inherited_listener`). When ``clarion worker`` ends, the
directory goes with it (:meth:`WorkerRun.close`), or, if it was killed, with
the next run's start (:func:`new_samples_directory`); the next run starts
from zero, as Prometheus counters do after a restart.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import os
import shutil
import socket
import socketserver
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from clarion.core.errors import SettingsError, ValidationError

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

log = logging.getLogger("clarion.metrics")

METRICS_PATH = "/metrics"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: ``<tmp>/clarion-worker-metrics-<pid of clarion worker>-<random>``
SAMPLES_PREFIX = "clarion-worker-metrics-"

StartResponse = Callable[..., Any]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


class MetricsServer(socketserver.ThreadingMixIn, WSGIServer):
    """A thread per scrape (a slow client does not hold up the next); it stops by
    itself when the process that started it is gone (an orphaned exposition
    process would hold the port)."""

    daemon_threads = True
    allow_reuse_address = True
    parent_pid: int | None = None

    def service_actions(self) -> None:
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            log.warning("clarion worker is gone; the metrics endpoint stops")
            raise SystemExit(0)


def metrics_app(registry: Collector) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """A WSGI app: ``GET /metrics`` is the registry's text, anything else 404."""
    from prometheus_client import make_wsgi_app

    serve = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != METRICS_PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: metrics are at /metrics\n"]
        result: Iterable[bytes] = serve(environ, start_response)
        return result

    return app


def bind(host: str, port: int, registry: Collector) -> MetricsServer:
    """Listen on ``host:port`` (raises OSError when the address is in use or invalid)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Server(MetricsServer):
        address_family = family

    server = Server((host, port), _Quiet)
    server.set_app(metrics_app(registry))
    return server


def serve_in_thread(server: MetricsServer) -> None:
    threading.Thread(target=server.serve_forever, name="clarion-metrics", daemon=True).start()


# --- where an endpoint listens ----------------------------------------------------------


def port_number(raw: str) -> int:
    """argparse type of ``--port``: 0 to 65535 (0: no endpoint)."""
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port, 1 to 65535, or 0 (off): {raw!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where a daemon's ``/metrics`` listens, and what set it (for error messages)."""

    host: str
    port: int
    host_source: str
    port_source: str

    @classmethod
    def choose(
        cls,
        *,
        host: str | None,
        port: int | None,
        setting_host: str,
        setting_port: int,
        variable_prefix: str,
    ) -> Endpoint:
        """The flags (``host``/``port``, None when not given) win over the settings."""
        return cls(
            setting_host if host is None else host,
            setting_port if port is None else port,
            f"{variable_prefix}_HOST" if host is None else "--host",
            f"{variable_prefix}_PORT" if port is None else "--port",
        )

    @property
    def enabled(self) -> bool:
        return self.port != 0

    def cannot_bind(self, exc: OSError) -> Exception:
        """The error to stop on: names the flag (exit 2) or the variable (exit 3)."""
        reason = exc.strerror or type(exc).__name__
        problem = f"cannot listen on {self.host}:{self.port} for /metrics ({reason})"
        # The port is the usual culprit; an unknown or foreign address is the host's.
        bad_host = isinstance(exc, socket.gaierror) or exc.errno in _BAD_HOST
        source = self.host_source if bad_host else self.port_source
        if source.startswith("--"):
            return ValidationError(source, problem)
        return SettingsError(source, problem)

    def __str__(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"


#: errno values that say the address, not the port, is wrong
_BAD_HOST = {errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT}


# --- the worker's processes ----------------------------------------------------------


@dataclasses.dataclass
class WorkerRun:
    """The samples directory and the bound endpoint of one ``clarion worker`` run."""

    directory: str
    server: MetricsServer | None

    def close(self) -> None:
        if self.server is not None:
            self.server.server_close()
        shutil.rmtree(self.directory, ignore_errors=True)


#: The run prepared in this process (inherited by Dramatiq's forks).
_run: WorkerRun | None = None


def new_samples_directory() -> str:
    """A fresh directory for this run's samples, set as ``PROMETHEUS_MULTIPROC_DIR``.

    Call it first thing in ``clarion worker``, before anything imports
    prometheus_client: the library chooses its multiprocess values at import.
    """
    _remove_orphans()
    directory = tempfile.mkdtemp(prefix=f"{SAMPLES_PREFIX}{os.getpid()}-")
    os.environ[MULTIPROC_ENV] = directory
    return directory


def _remove_orphans() -> None:
    """Remove the samples directories of ``clarion worker`` runs that were killed
    (SIGKILL leaves no chance to clean up); a directory whose process lives stays."""
    for path in Path(tempfile.gettempdir()).glob(f"{SAMPLES_PREFIX}*-*"):
        pid = path.name.removeprefix(SAMPLES_PREFIX).split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass  # alive, someone else's


def prepare_worker_run(directory: str, endpoint: Endpoint) -> WorkerRun:
    """In ``clarion worker``, before Dramatiq forks: the endpoint bound (unless its port
    is 0), summing the samples ``directory`` at each scrape. Raises the error of
    :meth:`Endpoint.cannot_bind` if the address cannot be used."""
    global _run
    from prometheus_client import CollectorRegistry, values
    from prometheus_client.multiprocess import MultiProcessCollector

    if not getattr(values.ValueClass, "_multiprocess", False):
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(
            "prometheus_client was imported before the worker's samples directory was set: "
            "the worker processes would not share their metrics"
        )
    server = None
    if endpoint.enabled:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        try:
            server = bind(endpoint.host, endpoint.port, registry)
        except OSError as exc:
            shutil.rmtree(directory, ignore_errors=True)
            raise endpoint.cannot_bind(exc) from None
        server.parent_pid = os.getpid()
    _run = WorkerRun(directory, server)
    return _run


def serve_worker_metrics() -> int:
    """Dramatiq's fork function: serve the endpoint the parent bound, until SIGTERM."""
    run = _run
    if run is None or run.server is None:
        log.error("no metrics endpoint was prepared by clarion worker; nothing to serve")
        return 1
    run.server.serve_forever(poll_interval=0.5)
    return 0


def close_inherited_listener() -> None:
    """In a worker process: close the copy of the endpoint's socket that the fork
    gave it (only the exposition process answers scrapes)."""
    if _run is not None and _run.server is not None:
        _run.server.socket.close()
