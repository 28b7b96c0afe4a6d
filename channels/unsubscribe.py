"""One-click unsubscribe links (RFC 8058): the signed per-recipient token and the headers.

Every email carries::

    List-Unsubscribe: <https://PUBLIC_BASE/unsubscribe/TOKEN>
    List-Unsubscribe-Post: List-Unsubscribe=One-Click

``TOKEN`` names the recipient (user id) and the category, and is signed with
HMAC-SHA256 under ``CLARION_UNSUBSCRIBE_SECRET``: a mail client POSTs to the
URL and the web service (``clarion.web.receipts``) opts that user out of that
category by email. Nothing else in the token is trusted; a changed character
anywhere fails :func:`read_token`. Tokens do not expire: a mail read a year
later must still unsubscribe.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import re
import uuid

__all__ = ["UnsubscribeLinks", "Unsubscription", "read_token", "sign_token"]

_VERSION = "u1"
_CATEGORY = re.compile(r"^[a-z][a-z0-9_]{0,49}$")


@dataclasses.dataclass(frozen=True, slots=True)
class Unsubscription:
    user_id: uuid.UUID
    category: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, payload: str) -> str:
    digest = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    return _b64(digest)


def sign_token(secret: str, user_id: uuid.UUID, category: str) -> str:
    """The URL-safe token for ``user_id`` and ``category``."""
    if not _CATEGORY.match(category):
        raise ValueError(f"category: not a category name: {category!r}")
    payload = f"{_VERSION}.{_b64(user_id.bytes)}.{category}"
    return f"{payload}.{_mac(secret, payload)}"


def read_token(secret: str, token: str) -> Unsubscription | None:
    """What ``token`` unsubscribes, or None when it is malformed, forged or altered."""
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != _VERSION:
        return None
    payload = ".".join(parts[:3])
    if not hmac.compare_digest(_mac(secret, payload), parts[3]):
        return None
    try:
        raw = _unb64(parts[1])
    except ValueError:
        return None
    if len(raw) != 16 or not _CATEGORY.match(parts[2]):
        return None
    return Unsubscription(uuid.UUID(bytes=raw), parts[2])


@dataclasses.dataclass(frozen=True, slots=True)
class UnsubscribeLinks:
    """Builds the RFC 8058 headers of an email (the workers' side)."""

    public_base_url: str
    secret: str = dataclasses.field(repr=False)

    def url(self, user_id: uuid.UUID, category: str) -> str:
        return f"{self.public_base_url}/unsubscribe/{sign_token(self.secret, user_id, category)}"

    def headers(self, user_id: uuid.UUID, category: str) -> dict[str, str]:
        return {
            "List-Unsubscribe": f"<{self.url(user_id, category)}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
