"""Headless Chromium for the browser tests: Playwright's Python package driving Debian's chromium.

No browser is downloaded: ``./dev test`` installs Debian's ``chromium`` when it is missing, and
Playwright is pointed at that executable (``CLARION_TEST_CHROMIUM`` overrides the path).

The root ``tests/conftest.py`` registers the ``chromium`` fixture for every tier; a test
takes it as an argument (no import)::

    def test_page(chromium):
        page = chromium.new_page()
        ...
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = os.environ.get("CLARION_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


def screenshot_dir() -> Path:
    """Where tests save the screenshots the README shows (created on first use)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """One headless Chromium per test module (a Playwright ``Browser``).

    Not per session: while Playwright's sync API is active it leaves an event loop
    marked running in the main thread, so ``asyncio.run`` fails in every test that
    runs after it (the real-time and fault tiers use it). Ending Playwright with the
    module that used it gives the thread back; within such a module, run asyncio
    code in a thread of its own."""
    from playwright.sync_api import sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"no Chromium at {CHROMIUM}: run the tests through ./dev test (it installs Debian's"
            " chromium), or point CLARION_TEST_CHROMIUM at one"
        )
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()
