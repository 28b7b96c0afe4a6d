"""Headless Chromium against a real gateway: a page of an origin the allow-list does not
name cannot open a WebSocket (HTTP 403 before the upgrade, no row); a page of an allowed
origin can, and sees a connection limit's close code in ``onclose``."""

from __future__ import annotations

import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from rtkit import RT, gateways_fixture, rt_fixture  # noqa: F401 - fixtures

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(300)]

# Opens a WebSocket to ?gateway= with ?token=; the title tells the test what happened.
PAGE = b"""<!doctype html><html><head><title>opening</title></head><body><script>
const q = new URLSearchParams(location.search);
const ws = new WebSocket(q.get("gateway") + "?token=" + encodeURIComponent(q.get("token")));
ws.onmessage = (e) => { document.title = "message " + JSON.parse(e.data).type; };
ws.onclose = (e) => { document.title = "closed " + e.code + " " + e.reason; };
</script></body></html>"""


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(name="site")
def site_fixture() -> Iterator[int]:
    """A page server; reached as http://127.0.0.1:PORT and as http://localhost:PORT, two
    origins for the browser."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def open_page(chromium: Any, origin: str, gateway_url: str, token: str) -> str:
    """The title the page ends on: ``message welcome`` or ``closed CODE REASON``."""
    page = chromium.new_page()
    try:
        query = urllib.parse.urlencode({"gateway": gateway_url, "token": token})
        page.goto(f"{origin}/?{query}")
        page.wait_for_function("document.title !== 'opening'", timeout=15000)
        title: str = page.title()
        return title
    finally:
        page.close()


def test_browser_origins_and_close_codes(chromium: Any, site: int, gateways: Any, rt: RT) -> None:
    allowed, other = f"http://127.0.0.1:{site}", f"http://localhost:{site}"
    gateway = gateways(
        CLARION_GATEWAY_ALLOWED_ORIGINS=allowed,
        CLARION_GATEWAY_MAX_CONNECTIONS_PER_USER="1",
    )
    user, stranger = uuid.uuid4(), uuid.uuid4()
    assert open_page(chromium, other, gateway.url, RT.token(stranger)) == "closed 1006"
    assert gateway.health()["refused"]["origin"] == 1
    assert "refused a connection: origin not allowed" in gateway.log()
    assert rt.rows("SELECT 1 FROM websocket_connections WHERE user_id = :u", u=stranger) == []

    page = chromium.new_page()  # holds the user's one connection
    try:
        query = urllib.parse.urlencode({"gateway": gateway.url, "token": RT.token(user)})
        page.goto(f"{allowed}/?{query}")
        page.wait_for_function("document.title === 'message welcome'", timeout=15000)
        # The same user from a second tab: opened, then closed with the limit's code.
        assert (
            open_page(chromium, allowed, gateway.url, RT.token(user))
            == "closed 4008 too many connections for this user"
        )
    finally:
        page.close()
    rows = rt.rows("SELECT device_info FROM websocket_connections WHERE user_id = :u", u=user)
    assert [r["device_info"]["origin"] for r in rows] == [allowed]
