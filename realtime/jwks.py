"""Signing keys of the platform's identity provider: a JWKS fetched over HTTPS, and PEM files.

Only public keys that can verify RS256 (RSA, 2048 bits or more) or ES256 (EC on
P-256) are kept; symmetric (``oct``), encryption (``use: enc``) and other keys in
the document are skipped, so a key can never be used with an algorithm it was not
made for.

:class:`JwksCache` fetches the document at start-up and keeps it
``CLARION_JWKS_MAX_AGE`` seconds. A token naming a ``kid`` the cache does not hold
fetches it again (key rotation), but at most once per
``CLARION_JWKS_REFRESH_INTERVAL``: tokens with made-up kids cannot turn the gateway
into a flood on the provider. A fetch replaces the whole set, so a key the provider
withdrew stops verifying at the next fetch. A failed fetch keeps the keys already
held until they are ``max_age`` old; after that every token is refused
(:class:`KeysUnavailable`, HTTP 503) until a fetch succeeds: it fails closed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from clarion.core.errors import SettingsError
from clarion.core.settings import safe_url

log = logging.getLogger("clarion.realtime.gateway")

#: A JWKS document larger than this is refused (providers publish a few keys, a few KiB).
MAX_JWKS_BYTES = 1 << 20
FETCH_TIMEOUT = 5.0
#: RFC 7518 3.3: RS256 keys of fewer bits are refused.
MIN_RSA_BITS = 2048

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class KeysUnavailable(Exception):
    """No usable signing keys: the JWKS was never fetched, or is too old and cannot be."""


@dataclasses.dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str | None
    algorithm: str  # "RS256" or "ES256"
    key: PublicKey


def algorithm_of(key: object) -> str | None:
    """The one algorithm ``key`` may verify: RS256, ES256, or None (not accepted)."""
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256" if key.key_size >= MIN_RSA_BITS else None
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    return None


def parse_jwks(document: Any) -> tuple[dict[str, SigningKey], list[SigningKey], int]:
    """(keys by kid, keys without a kid, number skipped) of a JWKS document.

    Raises ValueError when the document is not a JWKS at all."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('not a JWKS document (an object with a "keys" list)')
    by_kid: dict[str, SigningKey] = {}
    unnamed: list[SigningKey] = []
    skipped = 0
    for entry in document["keys"]:
        key = _signing_key(entry)
        if key is None:
            skipped += 1
        elif key.kid is None:
            unnamed.append(key)
        else:
            by_kid[key.kid] = key
    return by_kid, unnamed, skipped


def _signing_key(entry: Any) -> SigningKey | None:
    if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC"):
        return None
    if entry.get("use", "sig") != "sig" or "d" in entry:  # encryption keys; private keys
        return None
    try:
        jwk = PyJWK(entry)
    except (PyJWTError, ValueError, TypeError, KeyError):
        return None
    algorithm = algorithm_of(jwk.key)
    if algorithm is None or entry.get("alg", algorithm) != algorithm:
        return None
    kid = entry.get("kid")
    return SigningKey(str(kid) if kid is not None else None, algorithm, jwk.key)


def load_pem_keys(paths: Iterable[str]) -> list[SigningKey]:
    """The public keys of ``CLARION_JWT_PUBLIC_KEYS``; a file's name without ``.pem`` is its
    kid. Raises :class:`SettingsError` naming the file that cannot be used."""
    keys = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                key = serialization.load_pem_public_key(f.read())
        except (OSError, ValueError) as exc:
            raise SettingsError(
                "CLARION_JWT_PUBLIC_KEYS", f"{path}: not a PEM public key ({type(exc).__name__})"
            ) from None
        algorithm = algorithm_of(key)
        if algorithm is None:
            raise SettingsError(
                "CLARION_JWT_PUBLIC_KEYS",
                f"{path}: only RSA keys of {MIN_RSA_BITS} bits or more (RS256) and P-256 keys "
                "(ES256) are accepted",
            )
        assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
        kid = os.path.basename(path).removesuffix(".pem")
        keys.append(SigningKey(kid, algorithm, key))
    return keys


class JwksCache:
    def __init__(
        self,
        url: str,
        *,
        ca_bundle: str | None,
        refresh_interval: float,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        try:
            self.ssl = ssl.create_default_context(cafile=ca_bundle)
        except (ssl.SSLError, OSError) as exc:
            raise SettingsError(
                "CLARION_JWKS_CA_BUNDLE", f"not a PEM file of certificates ({_describe(exc)})"
            ) from None
        self.refresh_interval = refresh_interval
        self.max_age = max_age
        self.clock = clock
        self.by_kid: dict[str, SigningKey] = {}
        self.unnamed: list[SigningKey] = []
        self.fetched_at: float | None = None
        self.attempted_at: float | None = None
        #: successful fetches and failed attempts, for /healthz
        self.fetches = 0
        self.failures = 0
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None, algorithm: str) -> list[SigningKey]:
        """The keys that may verify a token of ``algorithm`` naming ``kid`` (none: unknown).

        Raises :class:`KeysUnavailable` when the set is missing or past its age."""
        if self._stale():
            await self.refresh()
        found = self._lookup(kid, algorithm)
        if not found and kid is not None:
            await self.refresh()  # perhaps a key rotated in (at most once per interval)
            found = self._lookup(kid, algorithm)
        if self._stale():
            raise KeysUnavailable("the identity provider's keys cannot be fetched")
        return found

    def _lookup(self, kid: str | None, algorithm: str) -> list[SigningKey]:
        if kid is None:
            return [k for k in (*self.by_kid.values(), *self.unnamed) if k.algorithm == algorithm]
        key = self.by_kid.get(kid)
        return [key] if key is not None and key.algorithm == algorithm else []

    def _stale(self) -> bool:
        return self.fetched_at is None or self.clock() - self.fetched_at > self.max_age

    async def refresh(self) -> bool:
        """Fetch the JWKS unless an attempt was made less than ``refresh_interval`` ago.

        Concurrent callers share one fetch. True if the keys were replaced."""
        started = self.clock()
        async with self._lock:
            last = self.attempted_at
            if last is not None and (last >= started or started - last < self.refresh_interval):
                return False  # fetched while we waited, or too soon: keep what we have
            self.attempted_at = self.clock()
            try:
                document = await self._fetch()
                by_kid, unnamed, skipped = parse_jwks(document)
            except Exception as exc:  # whatever went wrong, the keys held stay; none are added
                self.failures += 1
                log.warning("JWKS fetch from %s failed: %s", safe_url(self.url), _describe(exc))
                return False
            self.by_kid, self.unnamed = by_kid, unnamed
            self.fetched_at = self.clock()
            self.fetches += 1
            log.info(
                "JWKS from %s: %d signing keys (%s), %d skipped",
                safe_url(self.url),
                len(by_kid) + len(unnamed),
                ", ".join(sorted(by_kid)) or "no kids",
                skipped,
            )
            return True

    async def _fetch(self) -> Any:
        async with (
            httpx.AsyncClient(verify=self.ssl, timeout=FETCH_TIMEOUT) as client,
            client.stream("GET", self.url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError(f"document larger than {MAX_JWKS_BYTES} bytes")
        try:
            return json.loads(bytes(body))
        except ValueError:
            raise ValueError("not JSON") from None

    def status(self) -> Mapping[str, Any]:
        age = None if self.fetched_at is None else round(self.clock() - self.fetched_at, 1)
        return {
            "keys": len(self.by_kid) + len(self.unnamed),
            "age": age,
            "fetches": self.fetches,
            "failures": self.failures,
        }


def _describe(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__
