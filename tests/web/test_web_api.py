"""``clarion web`` over real HTTP: a real process, PostgreSQL, Redis and a real gateway.

Every endpoint, every authentication failure (nothing changes), bad bodies
(422 problem+json naming the field), idempotency (repeat and conflict), the
inbox's pagination and filters, the badge pushed to the user's gateway
connections, the OpenAPI schema, graceful shutdown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import sqlalchemy as sa
from idpkit import IdP, idp_fixture  # noqa: F401
from rtkit import REDIS_URL as RT_REDIS_URL
from rtkit import SECRET, Client, Gateway, gw_fixture  # noqa: F401
from sqlalchemy.engine import Engine
from webkit import Web, start_web

from realtime.auth import make_token

ROOT = Path(__file__).resolve().parents[2]
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def web(pg_url: str, gw: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    server = start_web(
        {
            "CLARION_DATABASE_URL": pg_url,
            "CLARION_REDIS_URL": RT_REDIS_URL,
            "CLARION_BROKER_URL": RT_REDIS_URL,
            "CLARION_JWT_SECRET": SECRET,
            "CLARION_EVENTS_CHANNEL": gw.env["CLARION_EVENTS_CHANNEL"],
        },
        tmp_path_factory.mktemp("web"),
    )
    yield server
    assert server.stop() == 0, server.log()
    # Everything this module sent went through: no key, token or body was logged.
    log = server.log()
    assert "clk_" not in log and "Bearer" not in log and "bid more on lot 7" not in log, log


@pytest.fixture(scope="module")
def keys(web: Web) -> dict[str, str]:
    made = {
        "send": web.new_key("platform", "send"),
        "read": web.new_key("reader", "read"),
        "all": web.new_key("everything", "send,read", "operate"),
        "revoked": web.new_key("old", "send", "read"),
    }
    lookup = made["revoked"].split("_")[1]
    done = web.cli("apikey", "revoke", f"clk_{lookup}")
    assert done.returncode == 0 and "revoked" in done.stdout, done.stderr
    return made


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def body(user: uuid.UUID, **extra: Any) -> dict[str, Any]:
    return {
        "user_id": str(user),
        "title": "You were outbid",
        "message": "Someone bid more on lot 7.",
        "category": "bid",
        "channels": ["in_app"],
        **extra,
    }


def counts(engine: Engine) -> tuple[int, int, int]:
    with engine.connect() as c:
        return (
            int(c.scalar(sa.text("SELECT count(*) FROM notifications")) or 0),
            int(c.scalar(sa.text("SELECT count(*) FROM real_time_events")) or 0),
            int(c.scalar(sa.text("SELECT count(*) FROM idempotency_keys")) or 0),
        )


def run_async(coroutine: Any) -> Any:
    """``asyncio.run`` in a thread of its own: a session's Playwright (the browser
    tests) keeps an event loop running in the main thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def assert_problem(r: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    problem: dict[str, Any] = r.json()
    assert problem["status"] == status and problem["title"] and problem["detail"], problem
    assert problem["instance"] == r.request.url.path
    if field is not None:
        assert problem["field"] == field, problem
        assert problem["detail"].startswith(f"{field}: "), problem
    return problem


# --- the application API ------------------------------------------------------------------


def test_create_read_bulk_and_events(web: Web, keys: dict[str, str], engine: Engine) -> None:
    user = uuid.uuid4()
    auction = uuid.uuid4()
    with web.client() as http:
        r = http.post(
            "/v1/notifications",
            json=body(
                user,
                auction_id=str(auction),
                priority="high",
                scheduled_at="2099-01-01T10:00:00+02:00",
                metadata={"lot": 7},
            ),
            headers=bearer(keys["send"]),
        )
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["status"] == "pending" and created["priority"] == "high"
        assert created["scheduled_at"] == "2099-01-01T08:00:00+00:00"
        with engine.connect() as c:
            row = c.execute(
                sa.text("SELECT * FROM notifications WHERE notification_id = :i"),
                {"i": created["notification_id"]},
            ).one()
        assert row.user_id == user and row.auction_id == auction and row.metadata == {"lot": 7}

        # a template, as clarion.notify renders it
        r = http.post(
            "/v1/notifications",
            json={
                "user_id": str(user),
                "template": "english/outbid",
                "template_data": {"amount": "$150.00", "auction_title": "Rare Coins"},
            },
            headers=bearer(keys["send"]),
        )
        assert r.status_code == 201, r.text

        got = http.get(
            f"/v1/notifications/{created['notification_id']}", headers=bearer(keys["read"])
        )
        assert got.status_code == 200, got.text
        shown = got.json()
        assert shown["notification"]["notification_id"] == created["notification_id"]
        assert shown["notification"]["status"] == "pending"
        assert shown["deliveries"] == [] and "addresses" not in shown
        missing = http.get(f"/v1/notifications/{uuid.uuid4()}", headers=bearer(keys["read"]))
        assert_problem(missing, 404)

        # bulk: one transaction through notify
        before = counts(engine)[0]
        r = http.post(
            "/v1/notifications/bulk",
            json={"notifications": [body(uuid.uuid4()) for _ in range(5)]},
            headers=bearer(keys["send"]),
        )
        assert r.status_code == 201, r.text
        assert len({n["notification_id"] for n in r.json()["notifications"]}) == 5
        assert counts(engine)[0] == before + 5
        # ... all or none: the fourth is bad, so none is created
        bad = [body(uuid.uuid4()) for _ in range(5)]
        bad[3]["channels"] = ["pigeon"]
        r = http.post(
            "/v1/notifications/bulk", json={"notifications": bad}, headers=bearer(keys["all"])
        )
        assert_problem(r, 422, "notifications[3].channels")
        assert counts(engine)[0] == before + 5


def test_events_reach_a_gateway_client(
    web: Web, keys: dict[str, str], gw: Gateway, engine: Engine
) -> None:
    auction = uuid.uuid4()

    async def scenario() -> dict[str, Any]:
        client = await Client.open(gw.url, make_token(uuid.uuid4(), SECRET))
        await client.subscribe(auctions=[str(auction)])
        async with httpx.AsyncClient(base_url=web.url) as http:
            r = await http.post(
                "/v1/events",
                json={
                    "event_type": "bid_placed",
                    "auction_id": str(auction),
                    "visibility": "authenticated",
                    "priority": "high",
                    "event_data": {"bid_amount": 150.0},
                },
                headers=bearer(keys["send"]),
            )
        assert r.status_code == 201, r.text
        frames = await client.recv_until("event")
        await client.close()
        return {"answer": r.json(), "event": frames[-1]}

    out = run_async(scenario())
    assert out["event"]["event_id"] == out["answer"]["event_id"]
    assert out["event"]["seq"] == out["answer"]["sequence_number"]
    assert out["event"]["data"] == {"bid_amount": 150.0}
    assert out["answer"]["category"] == "bid"


# --- authentication: 401/403 and nothing changed ----------------------------------------------


ENDPOINTS = [
    ("POST", "/v1/notifications", "send"),
    ("POST", "/v1/notifications/bulk", "send"),
    ("GET", "/v1/notifications/{nid}", "read"),
    ("POST", "/v1/events", "send"),
]


def _request(http: httpx.Client, method: str, path: str, token: str | None) -> httpx.Response:
    payload: dict[str, Any] | None = None
    if path == "/v1/notifications":
        payload = body(uuid.uuid4())
    elif path.endswith("/bulk"):
        payload = {"notifications": [body(uuid.uuid4())]}
    elif path == "/v1/events":
        payload = {"event_type": "system_notice", "event_data": {}}
    headers = bearer(token) if token is not None else {}
    return http.request(method, path, json=payload, headers=headers)


def test_every_auth_failure_is_401_or_403_and_changes_nothing(
    web: Web, keys: dict[str, str], engine: Engine
) -> None:
    with web.client() as http:
        nid = http.post(
            "/v1/notifications", json=body(uuid.uuid4()), headers=bearer(keys["send"])
        ).json()["notification_id"]
        before = counts(engine)
        for method, template, scope in ENDPOINTS:
            path = template.format(nid=nid)
            no_key = _request(http, method, path, None)
            assert_problem(no_key, 401)
            assert no_key.headers["www-authenticate"].startswith("Bearer")
            assert_problem(_request(http, method, path, "clk_0123456789ab_forged"), 401)
            assert_problem(_request(http, method, path, "not-a-key-at-all"), 401)
            assert_problem(
                _request(http, method, path, keys["send"] + "x"), 401
            )  # right prefix, wrong secret
            revoked = assert_problem(_request(http, method, path, keys["revoked"]), 401)
            assert "revoked" in revoked["detail"]
            wrong = keys["read"] if scope == "send" else keys["send"]
            forbidden = assert_problem(_request(http, method, path, wrong), 403)
            assert forbidden["required_scope"] == scope
            # a user's JWT is not an API key
            assert_problem(_request(http, method, path, make_token(uuid.uuid4(), SECRET)), 401)
        assert counts(engine) == before


def test_the_inbox_refuses_bad_tokens_and_other_users(
    web: Web, keys: dict[str, str], engine: Engine
) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    with web.client() as http:
        nid = http.post("/v1/notifications", json=body(alice), headers=bearer(keys["send"])).json()[
            "notification_id"
        ]
        expired = make_token(alice, SECRET, ttl=-60)
        forged = jwt.encode(
            {"sub": str(alice), "exp": 9999999999},
            "another-secret-0123456789abcdef-forged",
            algorithm="HS256",
        )
        routes = [
            ("GET", "/v1/inbox"),
            ("GET", "/v1/inbox/count"),
            ("POST", "/v1/inbox/read-all"),
            ("POST", f"/v1/inbox/{nid}/read"),
            ("POST", f"/v1/inbox/{nid}/click"),
            ("POST", f"/v1/inbox/{nid}/archive"),
        ]

        def row() -> Any:
            with engine.connect() as c:
                return c.execute(
                    sa.text(
                        "SELECT status, is_read, read_at, clicked_at, is_archived, updated_at"
                        " FROM notifications WHERE notification_id = :i"
                    ),
                    {"i": nid},
                ).one()

        before = row()
        for method, path in routes:
            for token in (None, expired, forged, keys["all"], "garbage"):
                r = http.request(method, path, headers=bearer(token) if token else {})
                assert_problem(r, 401)
        # Bob's token: Alice's notification is forbidden to him, whatever he asks of it.
        for method, path in routes[3:]:
            r = http.request(method, path, headers=bearer(make_token(bob, SECRET)))
            forbidden = assert_problem(r, 403)
            assert "another user's" in forbidden["detail"], forbidden
            # An id that is nobody's is not found (for Alice too).
            nobody = path.replace(nid, str(uuid.uuid4()))
            for user in (alice, bob):
                assert_problem(
                    http.request(method, nobody, headers=bearer(make_token(user, SECRET))), 404
                )
        bobs = http.get("/v1/inbox", headers=bearer(make_token(bob, SECRET))).json()
        assert bobs["items"] == [] and bobs["unread"] == 0
        assert (
            http.post("/v1/inbox/read-all", headers=bearer(make_token(bob, SECRET))).json()[
                "changed"
            ]
            == 0
        )
        assert row() == before
        alices = http.get("/v1/inbox", headers=bearer(make_token(alice, SECRET))).json()
        assert [i["notification_id"] for i in alices["items"]] == [nid]


# --- bad bodies -------------------------------------------------------------------------------


def test_bad_bodies_are_422_naming_the_field(
    web: Web, keys: dict[str, str], engine: Engine
) -> None:
    user = uuid.uuid4()
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    cases: list[tuple[str, Any, str]] = [
        ("/v1/notifications", {k: v for k, v in body(user).items() if k != "user_id"}, "user_id"),
        ("/v1/notifications", body(user, user_id="not-a-uuid"), "user_id"),
        ("/v1/notifications", body(user, channels=["email", "pigeon"]), "channels"),
        ("/v1/notifications", body(user, category="bidz"), "category"),
        ("/v1/notifications", body(user, max_attempts="three"), "max_attempts"),
        ("/v1/notifications", body(user, max_attempts=0), "max_attempts"),
        ("/v1/notifications", body(user, title="x" * 256), "title"),
        ("/v1/notifications", body(user, title="nul\u0000"), "title"),
        ("/v1/notifications", body(user, expires_at=past), "expires_at"),
        ("/v1/notifications", body(user, scheduled_at="2099-01-01T10:00:00"), "scheduled_at"),
        ("/v1/notifications", body(user, surprise=1), "surprise"),
        ("/v1/notifications", body(user, channels=["sms"], message="€" * 2000), "message"),
        ("/v1/notifications", {"user_id": str(user), "template": "english/nope"}, "template"),
        (
            "/v1/notifications",
            {"user_id": str(user), "template": "english/outbid"},
            "template_data",
        ),
        ("/v1/notifications", [1, 2], "body"),
        ("/v1/notifications/bulk", {"notifications": []}, "notifications"),
        (
            "/v1/notifications/bulk",
            {"notifications": [body(user), body(user, title=None)]},
            "notifications[1].title",
        ),
        ("/v1/events", {"event_data": {}}, "event_type"),
        (
            "/v1/events",
            {"event_type": "bid_placed", "event_data": {}, "visibility": "secret"},
            "visibility",
        ),
        (
            "/v1/events",
            {"event_type": "bid_placed", "event_data": {}, "visibility": "private"},
            "user_id",
        ),
        ("/v1/events", {"event_type": "bid_placed", "event_data": [1]}, "event_data"),
    ]
    before = counts(engine)
    with web.client() as http:
        for path, payload, field in cases:
            r = http.post(path, json=payload, headers=bearer(keys["all"]))
            problem = assert_problem(r, 422, field)
            assert problem["errors"][0]["field"] == field
        r = http.post(
            "/v1/notifications",
            content=b"{not json",
            headers={**bearer(keys["all"]), "content-type": "application/json"},
        )
        assert_problem(r, 422)
        assert_problem(
            http.get("/v1/notifications/12", headers=bearer(keys["all"])), 422, "notification_id"
        )
        # a body past 16 MiB is refused before it is read, declared or streamed
        huge = b'{"notifications": [' + b" " * (17 * 1024 * 1024) + b"]}"
        json_type = {**bearer(keys["all"]), "content-type": "application/json"}
        assert_problem(http.post("/v1/notifications/bulk", content=huge, headers=json_type), 413)

        def chunks() -> Iterator[bytes]:
            yield b'{"notifications": ['
            for _ in range(17):
                yield b" " * (1024 * 1024)
            yield b"]}"

        streamed = http.post("/v1/notifications/bulk", content=chunks(), headers=json_type)
        assert_problem(streamed, 413, "body")
        token = bearer(make_token(user, SECRET))
        assert_problem(http.get("/v1/inbox?category=nope", headers=token), 422, "category")
        assert_problem(http.get("/v1/inbox?auction_id=nope", headers=token), 422, "auction_id")
        assert_problem(http.get("/v1/inbox?limit=0", headers=token), 422, "limit")
        assert_problem(http.get("/v1/inbox?cursor=@@@", headers=token), 422, "cursor")
        assert_problem(http.post("/v1/inbox/zzz/read", headers=token), 422, "notification_id")
    assert counts(engine) == before


# --- idempotency ------------------------------------------------------------------------------


def test_idempotency_repeat_conflict_and_race(
    web: Web, keys: dict[str, str], engine: Engine
) -> None:
    user = uuid.uuid4()
    key = {"Idempotency-Key": f"outbid:{uuid.uuid4()}"}
    with web.client() as http:
        first = http.post(
            "/v1/notifications", json=body(user), headers={**bearer(keys["send"]), **key}
        )
        assert first.status_code == 201
        before = counts(engine)
        again = http.post(
            "/v1/notifications", json=body(user), headers={**bearer(keys["send"]), **key}
        )
        assert again.status_code == 201
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        conflict = http.post(
            "/v1/notifications",
            json=body(user, title="Another"),
            headers={**bearer(keys["send"]), **key},
        )
        assert_problem(conflict, 409, "Idempotency-Key")
        # the same body on another path is another request
        assert_problem(
            http.post(
                "/v1/notifications/bulk",
                json={"notifications": [body(user)]},
                headers={**bearer(keys["send"]), **key},
            ),
            409,
        )
        assert counts(engine) == before
        # keys are per API key: another key's same header is a new request
        other = http.post(
            "/v1/notifications", json=body(user), headers={**bearer(keys["all"]), **key}
        )
        assert (
            other.status_code == 201
            and other.json()["notification_id"] != first.json()["notification_id"]
        )
        # a refused request stores nothing: fixed, it goes through with the same key
        fresh = {"Idempotency-Key": str(uuid.uuid4())}
        assert_problem(
            http.post(
                "/v1/notifications",
                json=body(user, category="x"),
                headers={**bearer(keys["send"]), **fresh},
            ),
            422,
        )
        assert (
            http.post(
                "/v1/notifications", json=body(user), headers={**bearer(keys["send"]), **fresh}
            ).status_code
            == 201
        )

    # eight racing requests with one key: one notification, eight equal answers
    race = {"Idempotency-Key": str(uuid.uuid4())}
    payload = body(uuid.uuid4())
    n_before = counts(engine)[0]

    def post(_: int) -> httpx.Response:
        return httpx.post(
            f"{web.url}/v1/notifications",
            json=payload,
            headers={**bearer(keys["send"]), **race},
            timeout=30,
        )

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(8)))
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["notification_id"] for a in answers}) == 1
    assert counts(engine)[0] == n_before + 1


# --- the inbox ---------------------------------------------------------------------------------


def test_inbox_pages_filters_marks_and_pushes_the_badge(
    web: Web, keys: dict[str, str], gw: Gateway, engine: Engine
) -> None:
    user = uuid.uuid4()
    auction = uuid.uuid4()
    token = bearer(make_token(user, SECRET))
    with web.client() as http:
        made = []
        for i in range(7):
            extra: dict[str, Any] = {"title": f"n{i}"}
            if i % 2:
                extra["auction_id"] = str(auction)
            if i == 6:
                extra["category"] = "payment"
            made.append(
                http.post(
                    "/v1/notifications", json=body(user, **extra), headers=bearer(keys["send"])
                ).json()["notification_id"]
            )
        # not in the inbox: email only, and scheduled ahead
        http.post(
            "/v1/notifications", json=body(user, channels=["email"]), headers=bearer(keys["send"])
        )
        http.post(
            "/v1/notifications",
            json=body(user, scheduled_at="2099-01-01T00:00:00Z"),
            headers=bearer(keys["send"]),
        )

        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
            page = http.get("/v1/inbox", params=params, headers=token).json()
            seen += [i["notification_id"] for i in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(made))  # newest first, each once
        by_auction = http.get(
            "/v1/inbox", params={"auction_id": str(auction)}, headers=token
        ).json()
        assert {i["notification_id"] for i in by_auction["items"]} == {made[i] for i in (1, 3, 5)}
        payments = http.get("/v1/inbox", params={"category": "payment"}, headers=token).json()
        assert [i["notification_id"] for i in payments["items"]] == [made[6]]
        assert http.get("/v1/inbox/count", headers=token).json() == {"unread": 7}

        async def marks() -> list[dict[str, Any]]:
            client = await Client.open(gw.url, make_token(user, SECRET))
            badges = []
            async with httpx.AsyncClient(base_url=web.url, headers=token) as ah:
                r = await ah.post(f"/v1/inbox/{made[0]}/read")
                assert r.json() == {"notification_id": made[0], "changed": 1, "unread": 6}
                badges += await client.recv_until("badge")
                r = await ah.post(f"/v1/inbox/{made[1]}/click")
                assert r.json()["unread"] == 5
                badges += await client.recv_until("badge")
                r = await ah.post(f"/v1/inbox/{made[2]}/archive")
                assert r.json()["unread"] == 4
                badges += await client.recv_until("badge")
                r = await ah.post("/v1/inbox/read-all")
                assert r.json() == {"notification_id": None, "changed": 4, "unread": 0}
                badges += await client.recv_until("badge")
            await client.close()
            return [b for b in badges if b["type"] == "badge"]

        assert [b["unread"] for b in run_async(marks())] == [6, 5, 4, 0]
        unread = http.get("/v1/inbox", params={"unread": "true"}, headers=token).json()
        assert unread["items"] == [] and unread["unread"] == 0
        listed = http.get("/v1/inbox", headers=token).json()["items"]
        assert made[2] not in {i["notification_id"] for i in listed}  # archived
        archived = http.get("/v1/inbox", params={"archived": "true"}, headers=token).json()["items"]
        assert [i["notification_id"] for i in archived] == [made[2]]
    with engine.connect() as c:
        rows = {
            str(r.notification_id): r
            for r in c.execute(
                sa.text("SELECT * FROM notifications WHERE user_id = :u"), {"u": user}
            )
        }
    assert rows[made[0]].status == "read" and rows[made[0]].read_at is not None
    assert rows[made[1]].status == "clicked" and rows[made[1]].clicked_at is not None
    assert rows[made[2]].is_archived is True


# --- the service ---------------------------------------------------------------------------------


def test_openapi_schema_is_served_and_matches_the_checked_in_copy(web: Web) -> None:
    served = httpx.get(f"{web.url}/openapi.json").json()
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text())
    # Regenerate with: clarion web --openapi > docs/openapi.json
    assert served == committed
    assert served["openapi"].startswith("3.")
    operations = {(m.upper(), p) for p, ops in served["paths"].items() for m in ops}
    assert operations >= {
        ("POST", "/v1/notifications"),
        ("POST", "/v1/notifications/bulk"),
        ("GET", "/v1/notifications/{notification_id}"),
        ("POST", "/v1/events"),
        ("GET", "/v1/inbox"),
        ("GET", "/v1/inbox/count"),
        ("POST", "/v1/inbox/read-all"),
        ("POST", "/v1/inbox/{notification_id}/read"),
        ("POST", "/v1/inbox/{notification_id}/click"),
        ("POST", "/v1/inbox/{notification_id}/archive"),
        ("GET", "/healthz"),
    }
    assert not any(p.startswith("/console") for p in served["paths"])
    create = served["paths"]["/v1/notifications"]["post"]
    assert {"ApiKey": []} in create["security"]
    assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])
    assert "application/problem+json" in create["responses"]["422"]["content"]
    assert {"UserToken": []} in served["paths"]["/v1/inbox"]["get"]["security"]
    fields = served["components"]["schemas"]["NotificationIn"]["properties"]
    assert set(fields) >= {"user_id", "template", "title", "message", "channels", "idempotency_key"}


def test_healthz_apikey_cli_and_graceful_shutdown(
    pg_url: str, tmp_path: Path, engine: Engine
) -> None:
    server = start_web(
        {"CLARION_DATABASE_URL": pg_url, "CLARION_REDIS_URL": RT_REDIS_URL}, tmp_path
    )
    try:
        assert httpx.get(f"{server.url}/healthz").json() == {"database": "ok", "redis": "ok"}
        key = server.new_key("cli-check", "read")
        listed = server.cli("apikey", "list", "--json")
        rows = [json.loads(line) for line in listed.stdout.splitlines()]
        mine = [r for r in rows if r["name"] == "cli-check"]
        assert len(mine) == 1 and mine[0]["scopes"] == ["read"] and mine[0]["revoked_at"] is None
        assert key not in listed.stdout and key.split("_", 2)[2] not in listed.stdout
        with engine.connect() as c:
            stored = c.execute(
                sa.text("SELECT * FROM api_keys WHERE key_id = :k"), {"k": mine[0]["key_id"]}
            ).one()
        assert key not in [str(v) for v in stored] and len(stored.key_hash) == 64
        assert server.cli("apikey", "create", "x", "--scope", "admin").returncode == 2
        assert server.cli("apikey", "revoke", str(uuid.uuid4())).returncode == 6
        assert server.cli("apikey", "revoke", mine[0]["key_id"]).returncode == 0
        assert (
            httpx.get(
                f"{server.url}/v1/notifications/{uuid.uuid4()}", headers=bearer(key)
            ).status_code
            == 401
        )
    finally:
        code = server.stop()
    assert code == 0, server.log()
    assert "clarion web stopped" in server.log()


def test_the_inbox_takes_the_identity_providers_tokens_as_the_gateway_does(
    idp: IdP, pg_url: str, tmp_path: Path
) -> None:
    idp.add_key("k1")
    server = start_web(
        {"CLARION_DATABASE_URL": pg_url, "CLARION_REDIS_URL": RT_REDIS_URL, **idp.settings()},
        tmp_path,
    )
    try:
        user = uuid.uuid4()
        send = server.new_key("platform", "send")
        with server.client() as http:
            made = http.post("/v1/notifications", json=body(user), headers=bearer(send))
            nid = made.json()["notification_id"]
            mine = http.get("/v1/inbox", headers=bearer(idp.token(user, "k1")))
            assert mine.status_code == 200, mine.text
            assert [i["notification_id"] for i in mine.json()["items"]] == [nid]
            # another audience, or an HS256 token where no secret is set: refused
            assert_problem(
                http.get("/v1/inbox", headers=bearer(idp.token(user, "k1", aud="someone-else"))),
                401,
            )
            assert_problem(http.get("/v1/inbox", headers=bearer(make_token(user, SECRET))), 401)
    finally:
        assert server.stop() == 0, server.log()
