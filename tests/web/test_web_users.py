"""Users' settings and cancellation over real HTTP: a real ``clarion web`` process and PostgreSQL.

``PUT/GET /v1/users/{id}/locale`` (and ``locale`` on ``POST /v1/notifications``),
``GET/PUT /v1/users/{id}/preferences``, ``POST /v1/cancel``: what they store is
what the CLI reads back; bad arguments are 422 naming the field and change
nothing; every authentication failure is 401/403 and changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from testdb import REDIS_URL
from webkit import Web, start_web

from realtime.auth import make_token

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def web(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    server = start_web(
        {
            "CLARION_DATABASE_URL": pg_url,
            "CLARION_REDIS_URL": REDIS_URL,
            "CLARION_BROKER_URL": REDIS_URL,
        },
        tmp_path_factory.mktemp("web-users"),
    )
    yield server
    assert server.stop() == 0, server.log()
    log = server.log()
    assert "clk_" not in log and "Bearer" not in log, log


@pytest.fixture(scope="module")
def keys(web: Web) -> dict[str, str]:
    made = {
        "send": web.new_key("platform", "send"),
        "read": web.new_key("reader", "read"),
        "operate": web.new_key("on-call", "operate"),
        "revoked": web.new_key("old", "send", "read", "operate"),
    }
    done = web.cli("apikey", "revoke", f"clk_{made['revoked'].split('_')[1]}")
    assert done.returncode == 0, done.stderr
    return made


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(r: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    problem: dict[str, Any] = r.json()
    assert problem["status"] == status and problem["detail"], problem
    if field is not None:
        assert problem["field"] == field, problem
        assert problem["detail"].startswith(f"{field}: "), problem
    return problem


def snapshot(engine: Engine) -> tuple[Any, ...]:
    """Everything these routes may write."""
    with engine.connect() as c:
        return (
            sorted(c.execute(sa.text("SELECT user_id, locale FROM user_locales")).all()),
            sorted(
                c.execute(sa.text("SELECT user_id, channel, category FROM user_opt_outs")).all()
            ),
            sorted(
                c.execute(
                    sa.text("SELECT user_id, time_zone, starts_at, ends_at FROM user_quiet_hours")
                ).all()
            ),
            sorted(
                c.execute(sa.text("SELECT notification_id, status::text FROM notifications")).all()
            ),
            sorted(
                c.execute(sa.text("SELECT delivery_id, status::text FROM notification_deliveries"))
            ),
            int(c.scalar(sa.text("SELECT count(*) FROM idempotency_keys")) or 0),
        )


def later(hours: int = 2) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)).isoformat()


# --- locale -----------------------------------------------------------------------------------


def test_locale_is_set_read_and_used_by_notifications(
    web: Web, keys: dict[str, str], engine: Engine
) -> None:
    user = uuid.uuid4()
    with web.client() as http:
        path = f"/v1/users/{user}/locale"
        assert http.get(path, headers=bearer(keys["read"])).json() == {
            "user_id": str(user),
            "locale": None,
        }
        r = http.put(path, json={"locale": "pt_BR"}, headers=bearer(keys["send"]))
        assert r.status_code == 200, r.text
        assert r.json() == {"user_id": str(user), "locale": "pt-BR"}  # normalized
        assert http.get(path, headers=bearer(keys["operate"])).json()["locale"] == "pt-BR"
        shown = web.cli("locale", "show", str(user))
        assert shown.returncode == 0 and "pt-BR" in shown.stdout, shown.stdout + shown.stderr

        before = snapshot(engine)
        assert_problem(
            http.put(path, json={"locale": "xx-nope"}, headers=bearer(keys["send"])), 422, "locale"
        )
        assert_problem(http.put(path, json={}, headers=bearer(keys["send"])), 422, "locale")
        assert_problem(
            http.put(path, json={"locale": "de", "x": 1}, headers=bearer(keys["send"])), 422, "x"
        )
        assert_problem(
            http.put("/v1/users/nope/locale", json={"locale": "de"}, headers=bearer(keys["send"])),
            422,
            "user_id",
        )
        assert snapshot(engine) == before
        # An operate key may write too.
        r = http.put(path, json={"locale": "de"}, headers=bearer(keys["operate"]))
        assert r.status_code == 200 and r.json()["locale"] == "de", r.text

        # POST /v1/notifications takes notify's locale= for this once.
        made = http.post(
            "/v1/notifications",
            json={
                "user_id": str(uuid.uuid4()),
                "template": "penny/bid_placed",
                "template_data": {"auction_title": "Uhr", "extension_seconds": 15},
                "locale": "de",
                "channels": ["in_app"],
            },
            headers=bearer(keys["send"]),
        )
        assert made.status_code == 201, made.text
        with engine.connect() as c:
            row = c.execute(
                sa.text("SELECT locale, message FROM notifications WHERE notification_id = :i"),
                {"i": made.json()["notification_id"]},
            ).one()
        assert (row.locale, row.message) == ("de", "Ihr Gebot hat Uhr um 15 s verlängert")
        before = snapshot(engine)
        bad = http.post(
            "/v1/notifications",
            json={
                "user_id": str(user),
                "template": "penny/bid_placed",
                "template_data": {"auction_title": "Uhr", "extension_seconds": 15},
                "locale": "xx-nope",
            },
            headers=bearer(keys["send"]),
        )
        assert_problem(bad, 422, "locale")
        assert snapshot(engine) == before


# --- preferences ------------------------------------------------------------------------------


def test_preferences_are_replaced_read_back_and_refused_whole(
    web: Web, keys: dict[str, str], engine: Engine
) -> None:
    user = uuid.uuid4()
    path = f"/v1/users/{user}/preferences"
    with web.client() as http:
        empty = http.get(path, headers=bearer(keys["read"]))
        assert empty.status_code == 200, empty.text
        assert empty.json() == {"user_id": str(user), "opt_outs": [], "quiet_hours": None}

        wanted = {
            "opt_outs": [{"channel": "sms"}, {"channel": "email", "category": "bid"}],
            "quiet_hours": {"start": "22:00", "end": "07:00", "time_zone": "Europe/Paris"},
        }
        r = http.put(path, json=wanted, headers=bearer(keys["send"]))
        assert r.status_code == 200, r.text
        stored = r.json()
        assert stored["quiet_hours"] == wanted["quiet_hours"]
        assert sorted(stored["opt_outs"], key=lambda o: o["channel"]) == [
            {"channel": "email", "category": "bid"},
            {"channel": "sms", "category": None},
        ]
        assert http.get(path, headers=bearer(keys["operate"])).json() == stored
        # What the CLI (and the scheduler's policy) reads is what the API stored.
        shown = web.cli("prefs", "show", str(user), "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout) == stored

        # A bad entry anywhere refuses the whole request, naming it; nothing changes.
        before = snapshot(engine)
        cases: list[tuple[dict[str, Any], str]] = [
            ({"opt_outs": [{"channel": "sms"}, {"channel": "pigeon"}]}, "opt_outs[1].channel"),
            ({"opt_outs": [{"channel": "sms", "category": "bidz"}]}, "opt_outs[0].category"),
            ({"opt_outs": [{"category": "bid"}]}, "opt_outs[0].channel"),
            (
                {"quiet_hours": {"start": "22:00", "end": "07:00", "time_zone": "Mars/Olympus"}},
                "quiet_hours.time_zone",
            ),
            (
                {"quiet_hours": {"start": "25:00", "end": "07:00", "time_zone": "UTC"}},
                "quiet_hours.start",
            ),
            (
                {"quiet_hours": {"start": "07:00", "end": "07:00", "time_zone": "UTC"}},
                "quiet_hours.end",
            ),
            ({"opt_outs": [], "color": "red"}, "color"),
        ]
        for payload, field in cases:
            assert_problem(http.put(path, json=payload, headers=bearer(keys["send"])), 422, field)
        assert_problem(
            http.get("/v1/users/12/preferences", headers=bearer(keys["read"])), 422, "user_id"
        )
        assert snapshot(engine) == before
        assert http.get(path, headers=bearer(keys["read"])).json() == stored

        # Replacing: what is not listed is removed.
        r = http.put(path, json={"opt_outs": [{"channel": "push"}]}, headers=bearer(keys["send"]))
        assert r.status_code == 200, r.text
        assert r.json() == {
            "user_id": str(user),
            "opt_outs": [{"channel": "push", "category": None}],
            "quiet_hours": None,
        }
        shown = web.cli("prefs", "show", str(user), "--json")
        assert json.loads(shown.stdout) == r.json()


# --- cancel -----------------------------------------------------------------------------------


def test_cancel_by_key_and_by_user_and_auction(
    web: Web, keys: dict[str, str], engine: Engine
) -> None:
    user, auction = uuid.uuid4(), uuid.uuid4()
    ending = f"ending:{auction}"

    def status(nid: str) -> str:
        with engine.connect() as c:
            return str(
                c.scalar(
                    sa.text("SELECT status::text FROM notifications WHERE notification_id = :i"),
                    {"i": nid},
                )
            )

    with web.client() as http:

        def create(**extra: Any) -> str:
            r = http.post(
                "/v1/notifications",
                json={
                    "user_id": str(user),
                    "title": "Ending soon",
                    "message": "Lot 7 ends in 10 minutes.",
                    "category": "auction",
                    "channels": ["in_app", "email"],
                    "auction_id": str(auction),
                    "scheduled_at": later(),
                    **extra,
                },
                headers=bearer(keys["send"]),
            )
            assert r.status_code == 201, r.text
            return str(r.json()["notification_id"])

        keyed = create(cancellation_key=ending)
        other = create()
        elsewhere = create(auction_id=str(uuid.uuid4()))

        r = http.post("/v1/cancel", json={"cancellation_key": ending}, headers=bearer(keys["send"]))
        assert r.status_code == 200, r.text
        assert r.json() == {"notifications": 1, "deliveries": 0, "not_recalled": 0}
        assert (status(keyed), status(other), status(elsewhere)) == (
            "cancelled",
            "pending",
            "pending",
        )

        # Bad arguments: 422 naming them, nothing cancelled.
        before = snapshot(engine)
        for payload, field in [
            ({}, "cancel"),
            ({"reason": "why not"}, "cancel"),
            ({"user_id": "nope"}, "user_id"),
            ({"auction_id": str(auction), "template": "english/nope"}, "template"),
            ({"auction_id": str(auction), "reason": "x" * 300}, "reason"),
            ({"auction_id": str(auction), "everything": True}, "everything"),
        ]:
            assert_problem(
                http.post("/v1/cancel", json=payload, headers=bearer(keys["send"])), 422, field
            )
        assert snapshot(engine) == before

        # By user and auction, with an Idempotency-Key: a repeat replays, another body is 409.
        which = {"user_id": str(user), "auction_id": str(auction), "reason": "auction ended"}
        once = {**bearer(keys["operate"]), "Idempotency-Key": f"cancel:{auction}"}
        r = http.post("/v1/cancel", json=which, headers=once)
        assert r.status_code == 200, r.text
        assert r.json()["notifications"] == 1
        assert (status(other), status(elsewhere)) == ("cancelled", "pending")
        again = http.post("/v1/cancel", json=which, headers=once)
        assert again.status_code == 200 and again.json() == r.json()
        assert again.headers["idempotent-replayed"] == "true"
        conflict = http.post("/v1/cancel", json={**which, "reason": "other"}, headers=once)
        assert_problem(conflict, 409)
        assert status(elsewhere) == "pending"


# --- authentication ---------------------------------------------------------------------------


def test_every_auth_failure_is_401_or_403_and_changes_nothing(
    web: Web, keys: dict[str, str], engine: Engine
) -> None:
    user = uuid.uuid4()
    with web.client() as http:
        made = http.post(
            "/v1/notifications",
            json={
                "user_id": str(user),
                "title": "t",
                "message": "m",
                "category": "system",
                "channels": ["in_app"],
                "scheduled_at": later(),
                "cancellation_key": f"k:{user}",
            },
            headers=bearer(keys["send"]),
        )
        assert made.status_code == 201, made.text
        routes: list[tuple[str, str, Any, str]] = [
            ("PUT", f"/v1/users/{user}/locale", {"locale": "de"}, "send"),
            ("GET", f"/v1/users/{user}/locale", None, "read"),
            (
                "PUT",
                f"/v1/users/{user}/preferences",
                {"opt_outs": [{"channel": "sms"}]},
                "send",
            ),
            ("GET", f"/v1/users/{user}/preferences", None, "read"),
            ("POST", "/v1/cancel", {"cancellation_key": f"k:{user}"}, "send"),
        ]
        before = snapshot(engine)
        for method, path, payload, scope in routes:

            def call(
                token: str | None, method: str = method, path: str = path, payload: Any = payload
            ) -> httpx.Response:
                headers = bearer(token) if token is not None else {}
                return http.request(method, path, json=payload, headers=headers)

            missing = assert_problem(call(None), 401)
            assert "WWW-Authenticate" in call(None).headers, missing
            assert_problem(call("clk_0123456789ab_forged"), 401)
            assert_problem(call(keys["send"] + "x"), 401)
            assert "revoked" in assert_problem(call(keys["revoked"]), 401)["detail"]
            assert_problem(call(make_token(user, "a-user-token-secret-0123456789abcdef")), 401)
            wrong = keys["read"] if scope == "send" else keys["send"]
            forbidden = assert_problem(call(wrong), 403)
            assert forbidden["required_scope"] == scope
            assert forbidden["required_scopes"] == [scope, "operate"]
        assert snapshot(engine) == before
