"""The operators' console: sessions and CSRF over HTTP, then the whole console in headless
Chromium over real failed deliveries (a real worker, scheduler, gateway and ``clarion web``).

The browser test saves a screenshot of each page to ``docs/screenshots`` (the README shows them).
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from browserkit import screenshot_dir
from harness import CLARION, Stack, clarion_env, reset_broker, wait_until
from playwright.sync_api import expect
from rtkit import SECRET, start_gateway
from sqlalchemy.engine import Engine
from testdb import truncate_data
from webkit import Web, start_web, web_env
from websockets.sync.client import connect

from channels.sandboxes.farm import SandboxFarm
from channels.sandboxes.http import Fault
from clarion.operators.deadletters import open_dead_letters
from models.enums import Channel
from models.notifications import UserAddress
from realtime.auth import make_token

BROKER_URL = os.environ.get("CLARION_TEST_OPERATORS_REDIS_URL", "redis://127.0.0.1:6379/13")
WEBHOOK_SECRET = "whsec_Y29uc29sZS10ZXN0LXNpZ25pbmctc2VjcmV0LTEyMw=="


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


@pytest.fixture
def plain_web(pg_url: str, tmp_path: Path, engine: Engine) -> Iterator[Web]:
    truncate_data(engine)
    server = start_web(
        {
            "CLARION_DATABASE_URL": pg_url,
            "CLARION_BROKER_URL": BROKER_URL,
            "CLARION_REDIS_URL": BROKER_URL,
        },
        tmp_path,
    )
    yield server
    server.stop()


def sign_in(http: httpx.Client, key: str) -> httpx.Response:
    form = http.get("/console/login")
    return http.post("/console/login", data={"key": key, "csrf": csrf_of(form.text)})


def test_sessions_cookies_and_csrf(plain_web: Web) -> None:
    operate = plain_web.new_key("on-call", "operate")
    sender = plain_web.new_key("platform", "send", "read")
    with plain_web.client(follow_redirects=False) as http:
        assert http.get("/console").headers["location"] == "/console/login"
        form = http.get("/console/login")
        cookie = form.headers["set-cookie"]
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        assert "path=/console" in cookie.lower()
        # not to be framed (a purge button under someone else's page), own scripts only
        assert form.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in form.headers["content-security-policy"]
        # no CSRF token, or another one: refused, nobody signed in
        assert http.post("/console/login", data={"key": operate}).status_code == 403
        refused = http.post("/console/login", data={"key": operate, "csrf": "forged"})
        assert refused.status_code == 403 and refused.json()["field"] == "csrf"
        assert http.get("/console").status_code == 303
        # wrong keys
        assert sign_in(http, "clk_000000000000_nope").status_code == 401
        lacking = sign_in(http, sender)
        assert lacking.status_code == 401 and "lacks the operate scope" in lacking.text
        assert http.get("/console").status_code == 303
        # the right one
        done = sign_in(http, operate)
        assert done.status_code == 303 and done.headers["location"] == "/console"
        page = http.get("/console")
        assert page.status_code == 200 and "Farm status" in page.text
        # a form without the session's token is refused and changes nothing
        assert http.post("/console/logout", data={"csrf": "x"}).status_code == 403
        assert http.get("/console").status_code == 200
        assert (
            http.post(
                "/console/dead-letters/purge", data={"all": "yes", "confirm": "yes"}
            ).status_code
            == 403
        )
        # a cookie that was tampered with is no session
        with plain_web.client(follow_redirects=False) as other:
            value = http.cookies["clarion_console"]
            other.cookies.set("clarion_console", value[:-4] + "AAAA", path="/console")
            assert other.get("/console").status_code == 303
        # revoking the key ends its session at the next page
        listed = plain_web.cli("apikey", "list").stdout.splitlines()
        key_id = next(line.split()[0] for line in listed if "on-call" in line)
        assert plain_web.cli("apikey", "revoke", key_id).returncode == 0
        assert http.get("/console").headers["location"] == "/console/login"
        # sign-out
        fresh = sign_in(http, plain_web.new_key("second", "operate"))
        assert fresh.status_code == 303
        csrf = csrf_of(http.get("/console").text)
        assert http.post("/console/logout", data={"csrf": csrf}).status_code == 303
        assert http.get("/console").status_code == 303


def test_two_workers_share_console_sessions(pg_url: str, tmp_path: Path) -> None:
    env = {
        "CLARION_DATABASE_URL": pg_url,
        "CLARION_BROKER_URL": BROKER_URL,
        "CLARION_REDIS_URL": BROKER_URL,
    }
    # Each process would sign with a key of its own: refused, naming what is missing.
    alone = subprocess.run(
        [CLARION, "web", "--workers", "2", "--port", "1"],
        env=web_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert alone.returncode == 2 and "CLARION_WEB_SESSION_SECRET" in alone.stderr
    secret = {"CLARION_WEB_SESSION_SECRET": "s" * 40}
    server = start_web({**env, **secret}, tmp_path, "--workers", "2")
    try:
        key = server.new_key("on-call", "operate")
        with server.client(follow_redirects=False) as http:
            assert sign_in(http, key).status_code == 303
            # a fresh connection per request lands on either process
            pages = [
                httpx.get(f"{server.url}/console", cookies=http.cookies, timeout=30)
                for _ in range(8)
            ]
            assert {p.status_code for p in pages} == {200}
    finally:
        assert server.stop() == 0, server.log()


# --- the browser ---------------------------------------------------------------------------------


@pytest.fixture
def farm() -> Iterator[SandboxFarm]:
    with SandboxFarm() as f:
        yield f


@pytest.mark.timeout(300)
def test_console_in_a_browser_requeues_a_real_dead_letter(
    chromium: Any, farm: SandboxFarm, pg_url: str, engine: Engine, tmp_path: Path
) -> None:
    truncate_data(engine)
    reset_broker(BROKER_URL)
    env = clarion_env(
        tmp_path,
        {
            **farm.environment(),
            "CLARION_DATABASE_URL": pg_url,
            "CLARION_BROKER_URL": BROKER_URL,
            "CLARION_REDIS_URL": BROKER_URL,
            "CLARION_JWT_SECRET": SECRET,
            "CLARION_POLL_INTERVAL": "0.3",
            "CLARION_RETRY_MIN_BACKOFF": "0.2",
            "CLARION_RETRY_MAX_BACKOFF": "0.5",
            # every request fails: with the outage rule on they would wait, not dead-letter
            "CLARION_OUTAGE_THRESHOLD": "0",
        },
    )
    stack = Stack(env, tmp_path, "console", worker_threads=4).start()
    web = start_web(env, tmp_path)
    gateway = start_gateway(pg_url, tmp_path)
    shots = screenshot_dir()
    try:
        send = web.new_key("auction-platform", "send", "read")
        operate = web.new_key("on-call", "operate")
        farm.webhook.fail(Fault(status=503), times=10_000)
        users = [uuid.uuid4() for _ in range(3)]
        with sa.orm.Session(engine) as s, s.begin():
            s.add_all(
                UserAddress(
                    user_id=u,
                    channel=Channel.WEBHOOK,
                    address=f"{farm.webhook.url}/hooks/{u.hex[:8]}",
                    secret=WEBHOOK_SECRET,
                )
                for u in users
            )
        auction = uuid.uuid4()
        with web.client(headers={"Authorization": f"Bearer {send}"}) as http:
            made = [
                http.post(
                    "/v1/notifications",
                    json={
                        "user_id": str(u),
                        "title": "Auction ending soon",
                        "message": "Rare Coins ends in 30 s",
                        "category": "auction",
                        "channels": ["webhook"],
                        "auction_id": str(auction),
                        "max_attempts": 2,
                    },
                ).json()["notification_id"]
                for u in users
            ]

        def dead() -> list[str]:
            with open_dead_letters(BROKER_URL) as store:
                return [e.message_id for e in store.entries()]

        wait_until(lambda: len(dead()) == 3, timeout=60, what="3 dead letters")
        farm.webhook.reset()  # the endpoint recovers

        page = chromium.new_page(viewport={"width": 1280, "height": 860})
        page.goto(f"{web.url}/console")
        assert page.url.endswith("/console/login")
        page.screenshot(path=str(shots / "console-login.png"), full_page=True)
        # signed in by keyboard alone: the key field has the focus, Enter submits
        page.keyboard.type(operate)
        page.keyboard.press("Enter")
        page.wait_for_url(f"{web.url}/console")
        assert page.inner_text("#dead-total") == "3"
        assert page.inner_text("#gateway-connections") == "0"
        assert int(page.inner_text("#live-workers")) >= 1
        # a client connects to the gateway: the page refreshes itself to show it
        with connect(f"ws://127.0.0.1:{gateway.port}/?token={make_token(users[0], SECRET)}"):
            # (expect, not wait_for_function: the console's CSP forbids eval)
            expect(page.locator("#gateway-connections")).to_have_text("1", timeout=15000)
            page.screenshot(path=str(shots / "console-status.png"), full_page=True)

        page.click("text=Dead letters")
        page.wait_for_url(re.compile(r".*/console/dead-letters$"))
        assert page.inner_text("#dead-count") == "3"
        rows = page.locator("#dlq-form tbody tr")
        assert rows.count() == 3
        assert "503" in rows.first.inner_text()
        page.screenshot(path=str(shots / "console-dead-letters.png"), full_page=True)
        # the filters are the CLI's: an error text no dead letter has
        page.fill("#f-error", "no such error")
        page.click("button:has-text('Filter')")
        assert page.inner_text("#dead-count") == "0"
        page.goto(f"{web.url}/console/dead-letters?channel=webhook&since=1h")
        assert page.inner_text("#dead-count") == "3"

        # show one, and requeue it from there (keyboard: focus the button, Enter)
        target = made[0]
        page.click(f"tr:has(a[href='/console/notifications/{target}']) >> text=show")
        page.wait_for_url(re.compile(r".*/console/dead-letters/[0-9a-f-]+$"))
        assert target in page.content()
        assert page.locator("table").nth(1).locator("tbody tr").count() == 2  # two attempts
        page.screenshot(path=str(shots / "console-dead-letter.png"), full_page=True)
        page.focus("button:has-text('Requeue')")
        page.keyboard.press("Enter")
        page.wait_for_selector("#notice")
        assert "requeued 1, skipped 0, failed 0" in page.inner_text("#notice")
        assert page.inner_text("#dead-count") == "2"

        def delivered() -> bool:
            with engine.connect() as c:
                status = c.scalar(
                    sa.text(
                        "SELECT status FROM notification_deliveries WHERE notification_id = :n"
                    ),
                    {"n": target},
                )
            return status == "delivered"

        wait_until(delivered, timeout=30, what="the requeued webhook to be delivered")
        assert len(dead()) == 2
        assert [w.payload["data"]["notification_id"] for w in farm.webhook.deliveries] == [target]

        # its timeline says so
        page.goto(f"{web.url}/console/notifications?by=auction&q={auction}")
        assert page.locator("tbody tr").count() == 3
        page.screenshot(path=str(shots / "console-search.png"), full_page=True)
        page.click(f"a[href='/console/notifications/{target}']")
        page.wait_for_url(f"{web.url}/console/notifications/{target}")
        assert page.inner_text("#notification-status") == "delivered"
        timeline = page.inner_text("ol.timeline")
        assert "attempt 1: retryable" in timeline and "attempt 2: retryable" in timeline
        assert "dead-lettered" not in timeline  # cleared by the requeue
        assert "delivered" in timeline and "attempt 1: delivered" in timeline
        assert WEBHOOK_SECRET not in page.content()
        page.screenshot(path=str(shots / "console-notification.png"), full_page=True)

        # purge one, after the confirmation page
        page.goto(f"{web.url}/console/dead-letters")
        page.check("#pick-1")
        page.click("button:has-text('Purge picked')")
        page.wait_for_selector("#confirm-purge")
        assert len(dead()) == 2  # nothing purged before the confirmation
        page.screenshot(path=str(shots / "console-purge-confirm.png"), full_page=True)
        page.click("#confirm-purge")
        page.wait_for_selector("#notice")
        assert "purged 1, skipped 0, failed 0" in page.inner_text("#notice")
        assert len(dead()) == 1

        # the application API shows the same history, without secrets
        with web.client(headers={"Authorization": f"Bearer {send}"}) as http:
            shown = http.get(f"/v1/notifications/{target}")
        assert shown.status_code == 200
        [delivery] = shown.json()["deliveries"]
        assert delivery["status"] == "delivered"
        assert [a["outcome"] for a in delivery["history"]] == [
            "retryable",
            "retryable",
            "delivered",
        ]
        assert WEBHOOK_SECRET not in shown.text and "hooks/" not in shown.text

        # a phone's screen: the status page fits its width
        phone = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
        small = phone.new_page()
        small.goto(f"{web.url}/console/login")
        small.fill("#key", operate)
        small.click("button:has-text('Sign in')")
        small.wait_for_url(f"{web.url}/console")
        width = small.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, width
        small.screenshot(path=str(shots / "console-status-phone.png"), full_page=True)
        phone.close()
        page.close()
    finally:
        gateway.stop()
        web.stop()
        stack.stop()
