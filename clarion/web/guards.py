"""ASGI guards in front of every route: a bound on request bodies, and the console's headers.

* A body larger than :data:`MAX_BODY_BYTES` is refused with 413 problem+json
  before a route reads it (by ``Content-Length``, or while it streams in), so
  a huge request costs neither memory nor a database transaction.
* Console pages are not to be framed (clickjacking a "purge" button) and run
  only their own scripts: ``X-Frame-Options``, ``Content-Security-Policy``,
  ``Referrer-Policy``, ``X-Content-Type-Options``.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clarion.web.problems import PROBLEM_JSON, problem_body

#: The largest request body accepted: a bulk of 1,000 notifications of
#: ordinary size fits many times over.
MAX_BODY_BYTES = 16 * 1024 * 1024

CONSOLE_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' "
        b"'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    ),
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
]


class Guards:
    def __init__(self, app: ASGIApp, *, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await self._refuse(path, send)
            return
        if length is None and scope.get("method") in ("POST", "PUT", "PATCH"):
            # A streamed body (no Content-Length): read it here, up to the bound,
            # and hand it on; past the bound, refuse before any route parses it.
            messages: list[Message] = []
            received = 0
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request":
                    break
                received += len(message.get("body", b""))
                if received > self.max_body:
                    await self._refuse(path, send)
                    return
                if not message.get("more_body", False):
                    break
            replay = iter(messages)

            async def replayed() -> Message:
                return next(replay, None) or await receive()

            receive = replayed

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and path.startswith("/console"):
                headers = [*message.get("headers", []), *CONSOLE_HEADERS]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _refuse(self, path: str, send: Send) -> None:
        body: dict[str, Any] = problem_body(
            413,
            f"body: larger than {self.max_body} bytes",
            path,
            kind="too-large",
            field="body",
        )
        data = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(data)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})
