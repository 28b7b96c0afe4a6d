"""What one client may take of a gateway: origins, connections per user and per IP,
subscribe requests per second; and the count of every refusal.

* **Origins.** A browser sends ``Origin`` with the upgrade; one not in
  ``CLARION_GATEWAY_ALLOWED_ORIGINS`` gets HTTP 403 before the WebSocket opens (a
  page of another site cannot ride on a user's cookies or steal a token through
  the gateway). Clients that send no Origin (apps, servers) are let in or not by
  ``CLARION_GATEWAY_ALLOW_NO_ORIGIN``.
* **Client IP.** The TCP peer, unless the peer is one of
  ``CLARION_GATEWAY_TRUSTED_PROXIES``: then ``X-Forwarded-For`` is read from the
  right, skipping trusted proxies, and the first other address is the client. A
  header sent by anyone else is ignored, so a client cannot pick its own IP.
* **Connections.** At most ``CLARION_GATEWAY_MAX_CONNECTIONS_PER_USER`` per user
  and ``..._PER_IP`` per client IP, counted per gateway process from the moment the
  upgrade is admitted. Over a limit, ``refuse_newest`` lets the new WebSocket open
  and closes it at once with :data:`CLOSE_USER_LIMIT` (4008) or
  :data:`CLOSE_IP_LIMIT` (4009), so that a browser's ``onclose`` sees the code;
  ``close_oldest`` closes the oldest with :data:`CLOSE_REPLACED` (4010) instead.
* **Subscribe rate.** A token bucket per connection: ``CLARION_GATEWAY_SUBSCRIBE_RATE``
  requests per second, bursts of as many.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Hashable, Iterable

#: Close codes (4000-4999 is for applications, RFC 6455 7.4.2), in the README.
CLOSE_USER_LIMIT = 4008
CLOSE_IP_LIMIT = 4009
CLOSE_REPLACED = 4010

#: Names of the refusal counters (``/healthz`` ``refused``).
REFUSALS = (
    "origin",
    "token",
    "user_limit",
    "ip_limit",
    "channel_claim",
    "subscribe_rate",
    "subscriptions",
)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refusals:
    """How many times each kind of refusal happened since the gateway started."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(REFUSALS, 0)

    def add(self, kind: str) -> None:
        self.counts[kind] += 1

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)


class Origins:
    def __init__(self, allowed: Iterable[str] | None, *, allow_none: bool) -> None:
        self.allowed = None if allowed is None else frozenset(allowed)
        self.allow_none = allow_none

    def refuses(self, origin: str | None) -> str | None:
        """Why a request with this ``Origin`` header is refused, or None."""
        if origin is None:
            return None if self.allow_none else "an Origin header is required"
        if self.allowed is None or origin.strip().rstrip("/").lower() in self.allowed:
            return None
        return "origin not allowed"


class ClientAddress:
    def __init__(self, trusted: Iterable[str]) -> None:
        self.trusted: tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in trusted)

    def _trusts(self, address: Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.trusted)

    def of(self, peer: str, forwarded: list[str]) -> str:
        """The client's IP, given the TCP peer and every ``X-Forwarded-For`` value."""
        try:
            hop: Address = ipaddress.ip_address(peer)
        except ValueError:
            return peer
        if not self.trusted or not self._trusts(hop):
            return str(hop)  # the header of an untrusted peer says what the peer likes
        entries = [e.strip() for value in forwarded for e in value.split(",")]
        for entry in reversed(entries):
            try:
                address = ipaddress.ip_address(entry)
            except ValueError:
                break  # garbage from further out: the last hop we trust is what we know
            hop = address
            if not self._trusts(address):
                break
        return str(hop)


class ConnectionLimits:
    """Admitted connections per user and per IP, oldest first."""

    def __init__(self, *, per_user: int, per_ip: int, close_oldest: bool) -> None:
        self.per_user = per_user
        self.per_ip = per_ip
        self.close_oldest = close_oldest
        self.by_user: dict[str, dict[Hashable, None]] = {}
        self.by_ip: dict[str, dict[Hashable, None]] = {}
        self.keys: dict[Hashable, tuple[str | None, str]] = {}

    def admit(
        self, conn: Hashable, user: str | None, ip: str
    ) -> tuple[tuple[int, str] | None, list[tuple[Hashable, int, str]]]:
        """Admit ``conn`` (anonymous: ``user`` None) or not.

        Returns (refusal (close code, reason) or None, connections to close to make room);
        an admitted connection is counted until :meth:`release`."""
        checks = (
            (self.by_user, user, self.per_user, CLOSE_USER_LIMIT, "user"),
            (self.by_ip, ip, self.per_ip, CLOSE_IP_LIMIT, "address"),
        )
        evict: list[tuple[Hashable, int, str]] = []
        for table, key, limit, code, what in checks:
            held = table.get(key) if key is not None and limit else None
            if held is None or len(held) < limit:
                continue
            if not self.close_oldest:
                return (code, f"too many connections for this {what}"), []
            for old in list(held)[: len(held) - limit + 1]:
                self.release(old)
                evict.append((old, CLOSE_REPLACED, f"replaced by a newer connection ({what})"))
        self.keys[conn] = (user, ip)
        if user is not None:
            self.by_user.setdefault(user, {})[conn] = None
        self.by_ip.setdefault(ip, {})[conn] = None
        return None, evict

    def release(self, conn: Hashable) -> None:
        """Stop counting ``conn`` (closed, or never opened); a second call does nothing."""
        keys = self.keys.pop(conn, None)
        if keys is None:
            return
        user, ip = keys
        for table, key in ((self.by_user, user), (self.by_ip, ip)):
            held = table.get(key) if key is not None else None
            if held is not None:
                held.pop(conn, None)
                if not held:
                    del table[key]  # type: ignore[arg-type]

    def held(self, *, user: str | None = None, ip: str | None = None) -> int:
        if user is not None:
            return len(self.by_user.get(user, ()))
        return len(self.by_ip.get(ip or "", ()))


class Bucket:
    """A token bucket: ``rate`` takes per second, up to ``rate`` at once."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
