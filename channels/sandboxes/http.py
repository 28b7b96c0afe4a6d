"""The HTTP sandbox base: a threaded server on loopback with failure knobs.

A test (or the demo) starts a sandbox in its own process, points the SDK at
``sandbox.url``, then turns knobs::

    sandbox.latency = 0.05                          # every answer 50 ms late
    sandbox.fail(Fault(status=503), times=2)        # next two requests fail
    sandbox.fail(Fault(status=429, retry_after=2))  # then one throttle
    sandbox.fail(Fault(drop=True))                  # close without answering
    sandbox.fail(Fault(hang=30))                    # answer nothing for 30 s

Faults are consumed in order, one per matching request. ``sandbox.requests``
records every request the server answered (method, path, headers, body).
Another process can read that record as JSON from ``GET /_sandbox/requests``
and reset it with ``POST /_sandbox/reset``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclasses.dataclass(frozen=True)
class Fault:
    """One injected failure.

    ``status`` with ``body`` (JSON-serialisable or str) and ``headers`` answers
    with that response; ``retry_after`` adds a Retry-After header; ``drop``
    closes the connection without an answer; ``hang`` waits that many seconds
    before answering normally (longer than the client's timeout: a timeout).
    ``path_contains`` restricts the fault to matching request paths.
    """

    status: int | None = None
    body: Any = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    retry_after: float | None = None
    drop: bool = False
    hang: float = 0.0
    path_contains: str | None = None


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
            "body": self.body.decode("utf-8", "replace"),
            "at": self.at,
        }


@dataclasses.dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


Route = Callable[[RecordedRequest], Response]


class _QuietServer(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a worker opening a batch's
    # connections at once overflows it, and the kernel resets what it drops.
    # Real providers accept thousands.
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a timeout test) leaves a broken pipe behind
        # when a hung answer is finally written: expected, not worth a traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            return
        super().handle_error(request, client_address)


class HTTPSandbox:
    """Base of the HTTP sandboxes; subclasses implement :meth:`handle`."""

    name = "sandbox"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.latency = 0.0
        self.requests: list[RecordedRequest] = []
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._server = _QuietServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HTTPSandbox:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"{self.name}-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HTTPSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- knobs ------------------------------------------------------------------
    def fail(self, fault: Fault, times: int = 1) -> None:
        """Inject ``fault`` for the next ``times`` matching requests."""
        with self._lock:
            self._faults.extend([fault] * times)

    def clear_faults(self) -> None:
        """Drop the faults not used yet (an outage that ends)."""
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """Forget recorded requests and pending faults; latency back to 0."""
        with self._lock:
            self._faults.clear()
            self.requests.clear()
            self.latency = 0.0
            self.on_reset()

    def on_reset(self) -> None:
        """Hook for subclasses holding state of their own."""

    def requests_to(self, path_contains: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if path_contains in r.path]

    # --- the protocol -----------------------------------------------------------
    def handle(self, request: RecordedRequest) -> Response:
        raise NotImplementedError

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.path_contains is None or fault.path_contains in path:
                    del self._faults[i]
                    return fault
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        sandbox = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: tests read sandbox.requests instead

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = RecordedRequest(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    at=time.time(),
                )
                if self.path.startswith("/_sandbox/"):
                    self._control(request)
                    return
                if sandbox.latency:
                    time.sleep(sandbox.latency)
                fault = sandbox._take_fault(self.path)
                if fault is not None and fault.drop:
                    with sandbox._lock:
                        sandbox.requests.append(request)
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault is not None and fault.hang:
                    time.sleep(fault.hang)
                if fault is not None and fault.status is not None:
                    headers = dict(fault.headers)
                    if fault.retry_after is not None:
                        headers["Retry-After"] = f"{fault.retry_after:g}"
                    response = sandbox.fault_response(request, fault.status, fault.body, headers)
                else:
                    response = sandbox.handle(request)
                with sandbox._lock:
                    sandbox.requests.append(request)
                self._write(response)

            def _control(self, request: RecordedRequest) -> None:
                if self.path == "/_sandbox/requests":
                    with sandbox._lock:
                        data = [r.to_dict() for r in sandbox.requests]
                    self._write(Response(200, data))
                elif self.path == "/_sandbox/reset" and self.command == "POST":
                    sandbox.reset()
                    self._write(Response(204))
                elif self.path == "/_sandbox/fail" and self.command == "POST":
                    spec = json.loads(request.body or b"{}")
                    times = int(spec.pop("times", 1))
                    sandbox.fail(Fault(**spec), times=times)
                    self._write(Response(204))
                else:
                    self._write(Response(404, {"error": "unknown sandbox control"}))

            def _write(self, response: Response) -> None:
                if response.body is None:
                    payload = b""
                elif isinstance(response.body, bytes):
                    payload = response.body
                elif isinstance(response.body, str):
                    payload = response.body.encode()
                else:
                    payload = json.dumps(response.body).encode()
                self.send_response(response.status)
                headers = {"Content-Type": "application/json", **response.headers}
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if payload:
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        return Handler

    def fault_response(
        self, request: RecordedRequest, status: int, body: Any, headers: dict[str, str]
    ) -> Response:
        """Shape an injected failure the way this provider shapes its errors.

        The default sends ``body`` as given (or ``{"error": status}``).
        """
        return Response(status, body if body is not None else {"error": status}, headers)
