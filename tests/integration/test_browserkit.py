"""The browser tests' ground: Debian's chromium, driven by Playwright, runs a page."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

PAGE = b"""<!doctype html><html><head><title>before</title></head>
<body><button id="go" onclick="document.title='clicked ' + (1 + 1)">Go</button></body></html>"""


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def page_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_chromium_loads_a_page_runs_its_script_and_takes_a_screenshot(chromium, page_url, tmp_path):
    page = chromium.new_page()
    try:
        page.goto(page_url)
        assert page.title() == "before"
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")
        page.wait_for_function("document.title.startsWith('clicked')")
        assert page.title() == "clicked 2"
        shot = tmp_path / "page.png"
        page.screenshot(path=str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        page.close()
