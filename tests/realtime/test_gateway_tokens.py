"""Tokens from the platform's identity provider against real gateway processes: a JWKS
served over HTTPS by a certificate authority the test makes, RS256 and ES256, key
rotation, unknown kids, iss/aud, ``alg: none``, algorithm confusion, PEM files, failing
closed, and channel claims."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from typing import Any

import pytest
from harness import CLARION, ROOT
from idpkit import AUDIENCE, ISSUER, IdP, claims_for, idp_fixture, raw_token  # noqa: F401
from rtkit import RT, Client, Gateway, gateways_fixture, rt_fixture  # noqa: F401 - fixtures
from websockets.exceptions import InvalidStatus

from clarion import publish_event

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(300)]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def refused(gateway: Gateway, token: str | None) -> tuple[int, str]:
    """(HTTP status, body) of an upgrade the gateway refuses."""
    with pytest.raises(InvalidStatus) as caught:
        client = await Client.open(gateway.url, token)
        await client.close()
    response = caught.value.response
    return int(response.status_code), response.body.decode().strip()


async def accepted(gateway: Gateway, token: str, user: uuid.UUID) -> None:
    client = await Client.open(gateway.url, token)
    assert client.welcome["user_id"] == str(user)
    await client.send({"type": "ping"})
    assert (await client.recv())["type"] == "pong"
    await client.close()


def test_jwks_over_https_rs256_es256_rotation_and_unknown_kids(gateways: Any, idp: IdP) -> None:
    idp.add_key("rsa-1")
    idp.add_key("ec-1", "EC")
    gateway = gateways(**idp.settings())
    user = uuid.uuid4()
    assert idp.requests == 1  # fetched once at start-up
    assert gateway.health()["jwks"]["keys"] == 2

    async def scenario() -> None:
        await accepted(gateway, idp.token(user, "rsa-1"), user)
        await accepted(gateway, idp.token(user, "ec-1"), user)
        assert idp.requests == 1  # known kids: served from the cache
        # Rotation: the provider publishes rsa-2 and withdraws rsa-1.
        idp.add_key("rsa-2")
        idp.published.remove("rsa-1")
        await asyncio.sleep(1.1)  # CLARION_JWKS_REFRESH_INTERVAL
        await accepted(gateway, idp.token(user, "rsa-2"), user)  # the new kid is picked up
        assert idp.requests == 2
        # The withdrawn key, and a key the JWKS never published, are refused.
        assert await refused(gateway, idp.token(user, "rsa-1")) == (401, "unknown signing key")
        idp.add_key("never-published", publish=False)
        assert await refused(gateway, idp.token(user, "never-published")) == (
            401,
            "unknown signing key",
        )
        # A flood of made-up kids fetches the JWKS at most once per interval.
        before = idp.requests
        for _ in range(15):
            forged = idp.token(user, "rsa-2", header_kid=uuid.uuid4().hex)
            assert await refused(gateway, forged) == (401, "unknown signing key")
        assert idp.requests - before <= 1

    run(scenario())
    assert gateway.health()["refused"]["token"] == 17


def test_claims_and_algorithms_that_are_refused(gateways: Any, idp: IdP, rt: RT) -> None:
    idp.add_key("rsa-1")
    # Both kinds of key at once: HS256 is accepted, yet cannot be forged from the public key.
    hs_and_jwks = gateways(**idp.settings(CLARION_JWT_SECRET=rtkit_secret()))
    jwks_only = gateways(**idp.settings())
    user = uuid.uuid4()
    public_pem = idp.public_pem("rsa-1")

    async def scenario() -> None:
        gw = hs_and_jwks
        await accepted(gw, idp.token(user, "rsa-1"), user)
        await accepted(gw, RT.token(user, iss=ISSUER, aud=AUDIENCE), user)
        cases = {
            "issuer": (
                idp.token(user, "rsa-1", iss="https://other-idp.example/"),
                401,
                "wrong token issuer (iss)",
            ),
            "audience": (
                idp.token(user, "rsa-1", aud="another-app"),
                401,
                "wrong token audience (aud)",
            ),
            "no audience": (idp.token(user, "rsa-1", aud=None), 401, "token has no aud claim"),
            "HS256 without iss": (RT.token(user, aud=AUDIENCE), 401, "token has no iss claim"),
            "expired": (idp.token(user, "rsa-1", ttl=-30), 401, "token expired"),
            "alg none": (
                raw_token({"alg": "none", "kid": "rsa-1"}, claims_for(user), None),
                401,
                "algorithm 'none' is not accepted here",
            ),
            "alg None no kid": (
                raw_token({"alg": "None"}, claims_for(user), None),
                401,
                "algorithm 'None' is not accepted here",
            ),
            "confusion": (
                raw_token({"alg": "HS256", "kid": "rsa-1"}, claims_for(user), public_pem),
                401,
                "bad token signature",
            ),
            "other algorithm": (
                raw_token({"alg": "HS512", "kid": "rsa-1"}, claims_for(user), public_pem),
                401,
                "algorithm 'HS512' is not accepted here",
            ),
            "user is not a uuid": (
                idp.token("auth0|123456", "rsa-1"),
                401,
                "token sub is not a user id (a UUID)",
            ),
        }
        for name, (token, status, why) in cases.items():
            assert await refused(gw, token) == (status, why), name
        # Without a secret, an HS256 token is refused whatever it was keyed with.
        confusion = raw_token({"alg": "HS256", "kid": "rsa-1"}, claims_for(user), public_pem)
        assert await refused(jwks_only, confusion) == (
            401,
            "algorithm 'HS256' is not accepted here",
        )
        assert await refused(jwks_only, RT.token(user, iss=ISSUER, aud=AUDIENCE)) == (
            401,
            "algorithm 'HS256' is not accepted here",
        )
        await accepted(jwks_only, idp.token(user, "rsa-1"), user)

    run(scenario())
    assert hs_and_jwks.health()["refused"]["token"] == 10
    rows = rt.rows("SELECT 1 FROM websocket_connections WHERE user_id = :u", u=user)
    assert len(rows) == 3  # the three accepted connections only


def rtkit_secret() -> str:
    from rtkit import SECRET

    return SECRET


def test_jwks_fails_closed(gateways: Any, idp: IdP) -> None:
    idp.add_key("rsa-1")
    user = uuid.uuid4()
    # A gateway that does not trust the test's CA cannot fetch the JWKS: 503, not a pass.
    untrusting = gateways(**idp.settings(CLARION_JWKS_CA_BUNDLE=""))
    assert "JWKS fetch from" in untrusting.log() and "SSL" in untrusting.log()
    # A provider answering 500 at start-up: refused until the JWKS can be fetched.
    idp.failing = True
    waiting = gateways(**idp.settings())

    async def scenario() -> None:
        token = idp.token(user, "rsa-1")
        assert await refused(untrusting, token) == (
            503,
            "the identity provider's keys cannot be fetched",
        )
        assert await refused(waiting, token) == (
            503,
            "the identity provider's keys cannot be fetched",
        )
        idp.failing = False
        await asyncio.sleep(1.1)
        await accepted(waiting, token, user)

    run(scenario())
    health = untrusting.health()["jwks"]
    assert health["keys"] == 0 and health["fetches"] == 0 and health["failures"] >= 1


def test_pem_public_keys(gateways: Any, idp: IdP, tmp_path: Any) -> None:
    idp.add_key("rsa-1", publish=False)
    idp.add_key("ec-1", "EC", publish=False)
    idp.add_key("stranger", publish=False)
    files = []
    for kid in ("rsa-1", "ec-1"):
        path = tmp_path / f"{kid}.pem"
        path.write_bytes(idp.public_pem(kid))
        files.append(str(path))
    gateway = gateways(
        CLARION_JWT_SECRET="",
        CLARION_JWT_PUBLIC_KEYS=",".join(files),
        CLARION_JWT_ISSUER=ISSUER,
        CLARION_JWT_AUDIENCE=AUDIENCE,
    )
    user = uuid.uuid4()

    async def scenario() -> None:
        await accepted(gateway, idp.token(user, "rsa-1"), user)
        await accepted(gateway, idp.token(user, "ec-1"), user)
        await accepted(gateway, idp.token(user, "rsa-1", header_kid=False), user)  # tried in turn
        assert await refused(gateway, idp.token(user, "stranger", header_kid=False)) == (
            401,
            "bad token signature",
        )
        assert await refused(gateway, idp.token(user, "stranger")) == (401, "unknown signing key")

    run(scenario())
    assert idp.requests == 0


def test_asymmetric_keys_without_iss_or_aud_do_not_start(pg_url: str, idp: IdP) -> None:
    import os

    env = {**os.environ, **idp.settings(), "CLARION_DATABASE_URL": pg_url}
    for missing in ("CLARION_JWT_ISSUER", "CLARION_JWT_AUDIENCE"):
        bad = {**env, missing: ""}
        done = subprocess.run(
            [CLARION, "gateway"], env=bad, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 3, done.stderr
        assert missing in done.stderr and "required with CLARION_JWKS_URL" in done.stderr
    bad = {**env, "CLARION_JWKS_URL": idp.url.replace("https:", "http:")}
    done = subprocess.run(
        [CLARION, "gateway"], env=bad, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 3 and "CLARION_JWKS_URL" in done.stderr


def test_channel_claims_limit_subscriptions(gateways: Any, idp: IdP, rt: RT) -> None:
    idp.add_key("rsa-1")
    gateway = gateways(**idp.settings())
    rt.use(gateway)
    user = uuid.uuid4()
    private, other = uuid.uuid4(), uuid.uuid4()
    grant = [f"auction:{str(private).upper()}", "lot-*"]

    def publish(auction: uuid.UUID, n: int, topic: str = "bid") -> None:
        publish_event(
            "bid_placed",
            auction_id=auction,
            event_data={"n": n},
            visibility="public",
            broadcast_channels=[topic],
        )

    async def scenario() -> str:
        client = await Client.open(gateway.url, idp.token(user, "rsa-1", clarion_channels=grant))
        frames = await client.subscribe(auctions=[str(private)], topics=["lot-7"])
        assert frames[-1]["auctions"] == [str(private)] and frames[-1]["topics"] == ["lot-7"]
        for frame in (
            {"auctions": [str(other)]},
            {"topics": ["bid"]},
            {"topics": ["lot-8", "bid"]},  # all or nothing: lot-8 is not taken either
        ):
            await client.send({"type": "subscribe", **frame})
            error = await client.recv()
            assert error["type"] == "error" and error["error"] == "forbidden", error
            assert "the token does not allow" in error["detail"]
        await asyncio.to_thread(publish, other, 1)
        await asyncio.to_thread(publish, private, 2)
        got = await client.recv()
        assert got["type"] == "event" and got["auction_id"] == str(private)
        # A refreshed token's claim rules from then on: what it no longer grants is dropped.
        await client.send(
            {"type": "refresh", "token": idp.token(user, "rsa-1", clarion_channels="lot-*")}
        )
        refreshed = await client.recv()
        assert refreshed["type"] == "refreshed" and refreshed["dropped"] == [f"auction:{private}"]
        await asyncio.to_thread(publish, private, 3)
        await asyncio.to_thread(publish, other, 4, "lot-7")  # a marker, published after
        got = await client.recv()
        assert got["data"] == {"n": 4}  # the event of the dropped auction never came
        await client.send({"type": "subscribe", "topics": ["lot-9"]})
        assert (await client.recv_until("subscribed"))[-1]["topics"] == ["lot-7", "lot-9"]
        await client.close()
        return client.connection_id

    connection_id = run(scenario())
    assert gateway.health()["refused"]["channel_claim"] == 3
    row = rt.wait_until(
        lambda: (
            (r := rt.row("websocket_connections", "connection_id", connection_id))
            and r["connection_status"] == "disconnected"
            and r
        ),
        what="final row",
    )
    assert row["error_count"] == 3 and "forbidden" in row["last_error"]
    assert row["auction_subscriptions"] == [] and row["subscriptions"] == ["lot-7", "lot-9"]


def test_a_malformed_channel_claim_refuses_the_token(gateways: Any, idp: IdP) -> None:
    idp.add_key("rsa-1")
    gateway = gateways(**idp.settings())
    user = uuid.uuid4()

    async def scenario() -> None:
        for claim, why in (
            ({"a": 1}, "claim clarion_channels must be a list of subscription keys"),
            (["auction:not-a-uuid"], "claim clarion_channels: 'auction:not-a-uuid' is not"),
        ):
            status, body = await refused(gateway, idp.token(user, "rsa-1", clarion_channels=claim))
            assert status == 401 and body.startswith(why)

    run(scenario())
