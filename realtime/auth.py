"""Connection tokens: JWTs with the user id (``sub`` by default), ``exp``, and optionally
``sid`` (the client's session) and a channel claim.

Three kinds of key, any together: HS256 with ``CLARION_JWT_SECRET`` (a secret shared
with the platform), RS256/ES256 with the identity provider's JWKS
(``CLARION_JWKS_URL``, :mod:`realtime.jwks`) or with PEM files
(``CLARION_JWT_PUBLIC_KEYS``). The token's header names its algorithm, and that picks
the key: HS256 only ever meets the secret, RS256 only RSA keys, ES256 only P-256
keys. So ``alg: none``, any other algorithm, and the old confusion attack (an HS256
token "signed" with the provider's public key as the HMAC secret) are refused
before any signature is checked. With asymmetric keys ``iss`` and ``aud`` are
required (``CLARION_JWT_ISSUER`` / ``CLARION_JWT_AUDIENCE``): a provider signs
tokens for many applications.

The gateway checks the token in the HTTP upgrade request (query parameter
``token`` or ``Authorization: Bearer``), so a missing, forged or expired token is
answered ``401`` before the WebSocket opens and no data flows.

The channel claim (``CLARION_JWT_CHANNELS_CLAIM``, default ``clarion_channels``)
limits what the connection may subscribe to: a list (or a space-separated string)
of subscription keys, ``auction:<id>`` or a topic, where a trailing ``*`` matches
any suffix (``auction:*``: every auction). Without the claim, anything.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

import jwt

from clarion.core.settings import Settings
from realtime.jwks import JwksCache, KeysUnavailable, SigningKey, load_pem_keys

ALGORITHM = "HS256"
ASYMMETRIC = ("RS256", "ES256")
#: Entries of a channel claim beyond this make the token invalid.
MAX_GRANT_ENTRIES = 1000
#: Seconds of clock difference tolerated on exp, nbf and iat: a provider's token used
#: the second it was issued must not look issued in the future.
CLOCK_LEEWAY = 5.0


class TokenError(Exception):
    """The token is missing, malformed, forged or expired (the message says which).

    ``status`` is the HTTP answer to the upgrade: 401, or 503 when the signing keys
    cannot be had (the token may be fine)."""

    status = 401


class SigningKeysUnavailable(TokenError):
    status = 503


@dataclasses.dataclass(frozen=True, slots=True)
class Grant:
    """What a token's channel claim allows: exact subscription keys and prefixes."""

    exact: frozenset[str]
    prefixes: tuple[str, ...]

    def allows(self, key: str) -> bool:
        return key in self.exact or any(key.startswith(p) for p in self.prefixes)

    @classmethod
    def parse(cls, value: Any, claim: str) -> Grant:
        """The grant of a claim's value; raises :class:`TokenError` naming the claim."""
        if isinstance(value, str):
            value = value.split()
        if (
            not isinstance(value, list)
            or len(value) > MAX_GRANT_ENTRIES
            or not all(isinstance(v, str) and v for v in value)
        ):
            raise TokenError(f"claim {claim} must be a list of subscription keys")
        exact: set[str] = set()
        prefixes: list[str] = []
        for entry in value:
            if entry.endswith("*"):
                prefixes.append(entry[:-1])
            elif entry.startswith("auction:"):
                try:
                    exact.add("auction:" + str(uuid.UUID(entry.removeprefix("auction:"))))
                except ValueError:
                    raise TokenError(
                        f"claim {claim}: {entry[:80]!r} is not auction:<uuid>"
                    ) from None
            else:
                exact.add(entry)
        return cls(frozenset(exact), tuple(prefixes))


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    expires_at: float
    session_id: str | None
    #: None: the token does not limit subscriptions
    grant: Grant | None = None


class Verifier:
    """Checks connection tokens against every key the gateway was given."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        pem_keys: list[SigningKey] | None = None,
        jwks: JwksCache | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        user_claim: str = "sub",
        channels_claim: str = "clarion_channels",
        leeway: float = CLOCK_LEEWAY,
    ) -> None:
        self.secret = secret
        self.pem_keys = pem_keys or []
        self.jwks = jwks
        self.issuer = issuer
        self.audience = audience
        self.user_claim = user_claim
        self.channels_claim = channels_claim
        self.leeway = leeway

    @classmethod
    def from_settings(cls, settings: Settings) -> Verifier | None:
        """The verifier the settings describe (None: no keys, anonymous connections only)."""
        s = settings
        pem = load_pem_keys(s.jwt_public_keys)
        jwks = (
            JwksCache(
                s.jwks_url,
                ca_bundle=s.jwks_ca_bundle,
                refresh_interval=s.jwks_refresh_interval,
                max_age=s.jwks_max_age,
            )
            if s.jwks_url
            else None
        )
        if not (s.jwt_secret or pem or jwks):
            return None
        return cls(
            secret=s.jwt_secret,
            pem_keys=pem,
            jwks=jwks,
            issuer=s.jwt_issuer,
            audience=s.jwt_audience,
            user_claim=s.jwt_user_claim,
            channels_claim=s.jwt_channels_claim,
        )

    async def verify(self, token: str) -> Identity:
        """Check ``token``; raise :class:`TokenError` (the message says why) if it is bad."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise TokenError("invalid token: not a JWT") from None
        algorithm = header.get("alg")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenError("invalid token: kid is not a string")
        if algorithm == ALGORITHM and self.secret:
            keys: list[Any] = [self.secret]
        elif algorithm in ASYMMETRIC and (self.pem_keys or self.jwks):
            keys = await self._public_keys(kid, str(algorithm))
            if not keys:
                raise TokenError("unknown signing key" if kid else "no key for this algorithm")
        else:
            raise TokenError(f"algorithm {str(algorithm)[:20]!r} is not accepted here")
        claims: dict[str, Any] | None = None
        for key in keys:
            try:
                claims = self._decode(token, key, str(algorithm))
                break
            except jwt.InvalidSignatureError:
                continue  # a key without a kid: try the next one of the same kind
        if claims is None:
            raise TokenError("bad token signature")
        return self._identity(claims)

    async def _public_keys(self, kid: str | None, algorithm: str) -> list[Any]:
        pem = [k for k in self.pem_keys if k.algorithm == algorithm and kid in (None, k.kid)]
        if pem or self.jwks is None:
            return [k.key for k in pem]
        try:
            return [k.key for k in await self.jwks.key(kid, algorithm)]
        except KeysUnavailable as exc:
            raise SigningKeysUnavailable(str(exc)) from None

    def _decode(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        require = ["exp", self.user_claim]
        if self.issuer:
            require.append("iss")
        if self.audience:
            require.append("aud")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self.issuer,
                audience=self.audience,
                options={"require": require, "verify_aud": self.audience is not None},
                leeway=self.leeway,
            )
        except jwt.InvalidSignatureError:
            raise
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.InvalidIssuerError:
            raise TokenError("wrong token issuer (iss)") from None
        except jwt.InvalidAudienceError:
            raise TokenError("wrong token audience (aud)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"token has no {exc.claim} claim") from None
        except jwt.PyJWTError as exc:  # InvalidTokenError, and a key PyJWT will not use
            raise TokenError(f"invalid token: {type(exc).__name__}") from None
        return claims

    def _identity(self, claims: dict[str, Any]) -> Identity:
        try:
            user_id = str(uuid.UUID(str(claims[self.user_claim])))
        except ValueError:
            raise TokenError(f"token {self.user_claim} is not a user id (a UUID)") from None
        sid = claims.get("sid")
        grant = None
        if self.channels_claim in claims:
            grant = Grant.parse(claims[self.channels_claim], self.channels_claim)
        return Identity(user_id, float(claims["exp"]), str(sid)[:255] if sid else None, grant)


def verify_token(token: str, secret: str, *, leeway: float = 0.0) -> Identity:
    """Check an HS256 token's signature and expiry; raise :class:`TokenError` if bad."""
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
    user_id: uuid.UUID | str,
    secret: str,
    *,
    ttl: float = 3600,
    session_id: str | None = None,
    **claims: Any,
) -> str:
    """An HS256 token for ``user_id`` valid ``ttl`` seconds (for the platform, tests and
    benches); extra ``claims`` (``iss``, ``aud``, a channel claim) go in as given."""
    body: dict[str, object] = {"sub": str(user_id), "exp": int(time.time() + ttl), **claims}
    if session_id:
        body["sid"] = session_id
    return jwt.encode(body, secret, algorithm=ALGORITHM)
