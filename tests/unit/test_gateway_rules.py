"""The gateway's admission rules without a process: client IPs behind proxies, connection
limits, channel grants, which JWKS keys are kept, the settings they read."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from clarion.core.errors import SettingsError
from clarion.core.settings import Settings
from realtime.auth import Grant, TokenError, Verifier
from realtime.gateway import check_settings
from realtime.jwks import parse_jwks
from realtime.limits import (
    CLOSE_IP_LIMIT,
    CLOSE_REPLACED,
    CLOSE_USER_LIMIT,
    ClientAddress,
    ConnectionLimits,
    Origins,
)


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "client"),
    [
        ((), "127.0.0.1", ["203.0.113.5"], "127.0.0.1"),  # no proxy trusted: header ignored
        (("10.0.0.0/8",), "192.0.2.1", ["203.0.113.5"], "192.0.2.1"),  # peer not trusted
        (("10.0.0.0/8",), "10.0.0.2", ["203.0.113.5"], "203.0.113.5"),
        (("10.0.0.0/8",), "10.0.0.2", ["1.1.1.1, 203.0.113.5, 10.9.9.9"], "203.0.113.5"),
        (("10.0.0.0/8",), "10.0.0.2", ["1.1.1.1", "203.0.113.5"], "203.0.113.5"),  # 2 headers
        (("10.0.0.0/8",), "10.0.0.2", ["10.1.1.1, 10.2.2.2"], "10.1.1.1"),  # all trusted
        (("10.0.0.0/8",), "10.0.0.2", ["203.0.113.5, garbage"], "10.0.0.2"),
        (("10.0.0.0/8",), "10.0.0.2", [], "10.0.0.2"),
        (("10.0.0.0/8",), "::ffff:10.0.0.2", ["2001:db8::1"], "2001:db8::1"),
    ],
)
def test_client_address(
    trusted: tuple[str, ...], peer: str, forwarded: list[str], client: str
) -> None:
    assert ClientAddress(trusted).of(peer, forwarded) == client


def test_connection_limits_refuse_newest_and_release() -> None:
    limits = ConnectionLimits(per_user=2, per_ip=3, close_oldest=False)
    assert limits.admit("a", "u1", "ip1") == (None, [])
    assert limits.admit("b", "u1", "ip1") == (None, [])
    assert limits.admit("c", "u1", "ip1") == (
        (CLOSE_USER_LIMIT, "too many connections for this user"),
        [],
    )
    assert limits.admit("d", None, "ip1") == (None, [])  # anonymous: only the IP counts
    assert limits.admit("e", "u2", "ip1") == (
        (CLOSE_IP_LIMIT, "too many connections for this address"),
        [],
    )
    limits.release("a")
    limits.release("a")  # twice: no harm
    assert limits.held(user="u1") == 1 and limits.held(ip="ip1") == 2
    assert limits.admit("f", "u1", "ip2") == (None, [])
    for conn in "bdf":
        limits.release(conn)
    assert limits.by_user == {} and limits.by_ip == {} and limits.keys == {}


def test_connection_limits_close_oldest() -> None:
    limits = ConnectionLimits(per_user=2, per_ip=0, close_oldest=True)
    for conn in "ab":
        limits.admit(conn, "u1", "ip")
    refusal, evict = limits.admit("c", "u1", "ip")
    assert refusal is None
    assert evict == [("a", CLOSE_REPLACED, "replaced by a newer connection (user)")]
    assert list(limits.by_user["u1"]) == ["b", "c"]


def test_origins() -> None:
    origins = Origins(("https://a.example",), allow_none=False)
    assert origins.refuses("https://a.example") is None
    assert origins.refuses("HTTPS://A.example/") is None
    assert origins.refuses("https://b.example") == "origin not allowed"
    assert origins.refuses(None) == "an Origin header is required"
    assert Origins(None, allow_none=True).refuses("https://anything.example") is None


def test_grant() -> None:
    grant = Grant.parse(
        ["auction:6F1C0D2E-0000-4000-8000-000000000001", "lot-*", "news"], "clarion_channels"
    )
    assert grant.allows("auction:6f1c0d2e-0000-4000-8000-000000000001")
    assert grant.allows("lot-") and grant.allows("lot-42") and grant.allows("news")
    assert not grant.allows("auction:6f1c0d2e-0000-4000-8000-000000000002")
    assert not grant.allows("newsroom") and not grant.allows("bid")
    assert Grant.parse("a b*", "c").allows("bz")  # a space-separated string, as OAuth scopes
    for bad in ({"a": 1}, [1], [""], ["auction:x"], ["x"] * 1001):
        with pytest.raises(TokenError):
            Grant.parse(bad, "clarion_channels")


def test_parse_jwks_keeps_only_signing_keys_of_accepted_kinds() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    # a key too short to trust: the JWKS must not make the gateway accept it
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()  # noqa: S505
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()

    def jwk(key: object, algorithm: str, **extra: str) -> dict[str, str]:
        return {**json.loads(jwt.get_algorithm_by_name(algorithm).to_jwk(key)), **extra}

    document = {
        "keys": [
            jwk(rsa_key, "RS256", kid="r"),
            jwk(p256, "ES256", kid="e"),
            jwk(rsa_key, "RS256"),  # no kid
            jwk(small, "RS256", kid="small"),
            jwk(p384, "ES384", kid="p384"),
            jwk(rsa_key, "RS256", kid="enc", use="enc"),
            jwk(rsa_key, "RS256", kid="ps", alg="PS256"),
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "broken"},
            "not a key",
        ]
    }
    by_kid, unnamed, skipped = parse_jwks(document)
    assert sorted(by_kid) == ["e", "r"]
    assert (by_kid["r"].algorithm, by_kid["e"].algorithm) == ("RS256", "ES256")
    assert [k.algorithm for k in unnamed] == ["RS256"]
    assert skipped == 7
    for bad in ([], {"keys": "x"}, None):
        with pytest.raises(ValueError, match="not a JWKS document"):
            parse_jwks(bad)


def test_settings_of_the_gateway() -> None:
    s = Settings.from_env(
        {
            "CLARION_GATEWAY_ALLOWED_ORIGINS": "https://A.example/, http://b.example:8080",
            "CLARION_GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7",
        }
    )
    assert s.gateway_allowed_origins == ("https://a.example", "http://b.example:8080")
    assert s.gateway_trusted_proxies == ("10.0.0.0/8", "192.0.2.7/32")
    for name, value in (
        ("CLARION_GATEWAY_ALLOWED_ORIGINS", "https://a.example/path"),
        ("CLARION_GATEWAY_ALLOWED_ORIGINS", "*"),
        ("CLARION_GATEWAY_TRUSTED_PROXIES", "10.0.0.0/8, proxy.internal"),
        ("CLARION_JWKS_URL", "http://idp.example/jwks.json"),
        ("CLARION_JWKS_CA_BUNDLE", "/no/such/ca.pem"),
        ("CLARION_JWT_PUBLIC_KEYS", "/no/such/key.pem"),
        ("CLARION_GATEWAY_LIMIT_POLICY", "oldest"),
    ):
        with pytest.raises(SettingsError) as caught:
            Settings.from_env({name: value})
        assert name in str(caught.value)
    with pytest.raises(SettingsError, match="CLARION_JWT_ISSUER"):
        check_settings(Settings.from_env({"CLARION_JWKS_URL": "https://idp.example/jwks.json"}))
    with pytest.raises(SettingsError, match="CLARION_JWT_SECRET"):
        check_settings(Settings())


def test_unusable_key_files_are_named(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    settings = Settings.from_env(
        {
            "CLARION_JWKS_URL": "https://idp.example/jwks.json",
            "CLARION_JWKS_CA_BUNDLE": str(junk),
        }
    )
    with pytest.raises(SettingsError, match="CLARION_JWKS_CA_BUNDLE: not a PEM file"):
        Verifier.from_settings(settings)
    settings = Settings.from_env({"CLARION_JWT_PUBLIC_KEYS": str(junk)})
    with pytest.raises(SettingsError, match=r"CLARION_JWT_PUBLIC_KEYS: .*junk\.pem: not a PEM"):
        Verifier.from_settings(settings)
