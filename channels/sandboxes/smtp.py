"""A local SMTP server (aiosmtpd) that records mail and fails on request.

Usage::

    with SMTPSandbox() as smtp:                      # 127.0.0.1, a free port
        provider = SMTPProvider(host=smtp.host, port=smtp.port, ...)
        smtp.fail("550 5.1.1 user unknown")          # next RCPT TO refused
        smtp.fail("451 4.7.1 try later", times=2)    # greylisting
        smtp.fail("554 5.7.1 spam", stage="data")    # content refused after DATA
        smtp.fail(drop=True, stage="data")           # connection closed, no reply
        smtp.fail(hang=5, stage="data")              # reply 5 s late (a timeout)
        smtp.latency = 0.05                          # every DATA answered 50 ms late
        smtp.messages[0].message["Subject"]

Faults are consumed in order, one per matching command. With
``credentials=("user", "pass")`` the server offers AUTH PLAIN/LOGIN and
refuses other credentials with ``535``.

aiosmtpd is a development dependency: importing this module needs it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import socket
import threading
import uuid
from collections import deque
from email.message import EmailMessage
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

Stage = Literal["mail", "rcpt", "data"]


@dataclasses.dataclass(frozen=True)
class SMTPFault:
    """One injected failure at one SMTP command.

    ``reply`` ("550 5.1.1 user unknown") answers the command; ``drop``
    closes the connection instead; ``hang`` delays the answer first.
    """

    reply: str | None = None
    stage: Stage = "rcpt"
    drop: bool = False
    hang: float = 0.0


@dataclasses.dataclass(frozen=True)
class ReceivedMail:
    """One accepted message: the envelope and the parsed content."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    authenticated_as: str | None


class _Controller(Controller):
    """aiosmtpd's threaded controller serving a socket bound beforehand.

    Binding first (to port 0) gives a free port known before start, without
    the race of probing for one.
    """

    def __init__(self, handler: Any, sock: socket.socket, **smtp_kwargs: Any) -> None:
        host, port = sock.getsockname()[:2]
        super().__init__(handler, hostname=host, port=port, **smtp_kwargs)
        self._sock = sock

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._sock)


class SMTPSandbox:
    """An SMTP server on 127.0.0.1 recording every accepted mail in ``messages``."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, credentials: tuple[str, str] | None = None
    ) -> None:
        self.latency = 0.0
        self.credentials = credentials
        self.messages: list[ReceivedMail] = []
        self._faults: deque[SMTPFault] = deque()
        self._lock = threading.Lock()
        self._sock = socket.create_server((host, port))
        self._controller: _Controller | None = None

    # --- lifecycle ------------------------------------------------------------
    @property
    def host(self) -> str:
        return str(self._sock.getsockname()[0])

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def start(self) -> SMTPSandbox:
        # The controller (and its event loop) is made here, not in __init__,
        # so a sandbox that is never started leaves no loop to leak.
        kwargs: dict[str, Any] = {
            # A fixed name: the default is socket.getfqdn(), a DNS lookup.
            "server_hostname": "sandbox.clarion.invalid",
            "ready_timeout": 5.0,
        }
        if self.credentials is not None:
            # AUTH over plain TCP: this is a loopback test server with no TLS.
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_require_tls"] = False
        self._controller = _Controller(_Handler(self), self._sock, **kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        self._sock.close()

    def __enter__(self) -> SMTPSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- knobs ----------------------------------------------------------------
    def fail(
        self,
        reply: str | None = None,
        *,
        times: int = 1,
        stage: Stage = "rcpt",
        drop: bool = False,
        hang: float = 0.0,
    ) -> None:
        """Answer the next ``times`` commands of ``stage`` with ``reply`` (or drop/hang)."""
        if reply is None and not drop and not hang:
            raise ValueError("a fault needs a reply, drop=True or hang > 0")
        with self._lock:
            self._faults.extend([SMTPFault(reply, stage, drop, hang)] * times)

    def reset(self) -> None:
        """Forget received mail and pending faults; latency back to 0."""
        with self._lock:
            self._faults.clear()
            self.messages.clear()
            self.latency = 0.0

    # --- server side ----------------------------------------------------------
    def _take_fault(self, stage: Stage) -> SMTPFault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.stage == stage:
                    del self._faults[i]
                    return fault
        return None

    def _record(self, mail: ReceivedMail) -> None:
        with self._lock:
            self.messages.append(mail)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and self.credentials is not None:
            user, password = self.credentials
            if auth_data.login == user.encode() and auth_data.password == password.encode():
                return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)


class _Handler:
    """aiosmtpd handler hooks; they run on the controller's event loop thread."""

    def __init__(self, sandbox: SMTPSandbox) -> None:
        self.sandbox = sandbox

    async def _fault(self, server: SMTP, stage: Stage) -> str | None:
        fault = self.sandbox._take_fault(stage)
        if fault is None:
            return None
        if fault.hang:
            await asyncio.sleep(fault.hang)
        if fault.drop:
            if server.transport is not None:
                server.transport.close()
            # Nobody reads this: the connection is gone.
            return "421 4.3.2 connection dropped by the sandbox"
        return fault.reply

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = await self._fault(server, "mail")
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = await self._fault(server, "rcpt")
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.sandbox.latency:
            await asyncio.sleep(self.sandbox.latency)
        reply = await self._fault(server, "data")
        if reply is not None:
            return reply
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)  # guaranteed by policy.default
        queue_id = uuid.uuid4().hex[:12].upper()
        self.sandbox._record(
            ReceivedMail(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                message=message,
                raw=raw,
                authenticated_as=session.auth_data if session.authenticated else None,
            )
        )
        return f"250 2.0.0 OK queued as {queue_id}"
