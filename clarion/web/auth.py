"""Who is calling: an API key (application API) or a user's JWT (inbox API).

Both come as ``Authorization: Bearer ...``; user tokens are checked exactly as the
real-time gateway checks them (the same verifier, the same settings). No credential, or one Clarion
did not issue, or a revoked key, or an expired token: 401 with
``WWW-Authenticate``. A valid key without the scope the route needs: 403.
Nothing about the credential itself is ever logged.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from clarion.web.context import WebContext, context
from clarion.web.problems import Problem
from models.apikeys import KeyInfo, Scope
from realtime.auth import SigningKeysUnavailable, TokenError

# auto_error=False: a missing header is answered by us, as problem+json.
api_key_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key made by `clarion apikey create` (clk_...), scoped send/read/operate.",
)
user_token_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="UserToken",
    bearerFormat="JWT",
    description="The user's HS256 token, the same as the real-time gateway's (sub = user id).",
)


def _unauthorized(detail: str, realm: str) -> Problem:
    return Problem(
        401,
        detail,
        kind="unauthorized",
        headers={"WWW-Authenticate": f'Bearer realm="{realm}"'},
    )


def require_scope(scope: Scope, *alternatives: Scope) -> Callable[..., KeyInfo]:
    """A dependency: the caller's API key, which must be active and hold ``scope``
    (or one of ``alternatives``)."""
    accepted = (scope, *alternatives)
    names = " or ".join(repr(s.value) for s in accepted)

    def check(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(api_key_scheme),  # noqa: B008
    ) -> KeyInfo:
        ctx = context(request)
        if credentials is None:
            raise _unauthorized("an API key is required (Authorization: Bearer clk_...)", "api")
        key = ctx.keys.authenticate(credentials.credentials)
        if key is None:
            raise _unauthorized("unknown API key", "api")
        if not key.active:
            raise _unauthorized("this API key was revoked", "api")
        if not any(s in key.scopes for s in accepted):
            extra: dict[str, object] = {"required_scope": scope.value}
            if alternatives:
                extra["required_scopes"] = [s.value for s in accepted]
            raise Problem(
                403, f"this API key lacks the {names} scope", kind="forbidden", extra=extra
            )
        return key

    return check


@dataclasses.dataclass(frozen=True, slots=True)
class User:
    user_id: uuid.UUID


async def current_user(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(user_token_scheme),  # noqa: B008
) -> User:
    """The user whose token signs the request (the inbox API).

    Checked by the gateway's own :class:`~realtime.auth.Verifier`, built from the
    same settings: HS256 with ``CLARION_JWT_SECRET``, the identity provider's
    JWKS or PEM keys, issuer and audience, the user claim.
    """
    ctx: WebContext = context(request)
    if ctx.verifier is None:
        raise Problem(
            503,
            "the inbox needs the gateway's token keys (CLARION_JWT_SECRET, CLARION_JWKS_URL or "
            "CLARION_JWT_PUBLIC_KEYS); none is set",
            kind="config",
        )
    if credentials is None:
        raise _unauthorized("a user token is required (Authorization: Bearer <JWT>)", "inbox")
    try:
        identity = await ctx.verifier.verify(credentials.credentials)
    except SigningKeysUnavailable as exc:
        raise Problem(503, f"the token's signing keys cannot be read: {exc}", kind="keys") from None
    except TokenError as exc:
        raise _unauthorized(str(exc), "inbox") from None
    return User(uuid.UUID(identity.user_id))
