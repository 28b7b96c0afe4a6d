"""Connection tokens: HS256 JWTs with ``sub`` (the user id, a UUID) and ``exp``.

The gateway checks the token in the HTTP upgrade request (query parameter
``token`` or ``Authorization: Bearer``), so a missing, forged or expired
token is answered ``401`` before the WebSocket opens and no data flows.
An optional ``sid`` claim names the client's session (``session_id``).
"""

from __future__ import annotations

import dataclasses
import time
import uuid

import jwt

ALGORITHM = "HS256"


class TokenError(Exception):
    """The token is missing, malformed, forged or expired (the message says which)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    expires_at: float
    session_id: str | None


def verify_token(token: str, secret: str, *, leeway: float = 0.0) -> Identity:
    """Check the signature and expiry of ``token``; raise :class:`TokenError` if bad."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "sub"]},
            leeway=leeway,
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("token expired") from None
    except jwt.InvalidSignatureError:
        raise TokenError("bad token signature") from None
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid token: {type(exc).__name__}") from None
    try:
        user_id = str(uuid.UUID(str(claims["sub"])))
    except ValueError:
        raise TokenError("token subject is not a user id") from None
    sid = claims.get("sid")
    return Identity(user_id, float(claims["exp"]), str(sid)[:255] if sid else None)


def make_token(
    user_id: uuid.UUID | str, secret: str, *, ttl: float = 3600, session_id: str | None = None
) -> str:
    """A token for ``user_id`` valid ``ttl`` seconds (for the platform, tests and benches)."""
    claims: dict[str, object] = {"sub": str(user_id), "exp": int(time.time() + ttl)}
    if session_id:
        claims["sid"] = session_id
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
