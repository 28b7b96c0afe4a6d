"""``clarion demo`` ends with the console's URL and a demo key; that console shows its rows."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from testdb import create_database, drop_database
from webkit import start_web, web_env

from clarion.core.db import make_engine

DEMO_REDIS = os.environ.get("CLARION_TEST_DEMO_REDIS_URL", "redis://127.0.0.1:6379/11")


@pytest.fixture
def demo_db() -> Iterator[str]:
    url = create_database("clarion_demo_console")
    yield url
    drop_database(url)


@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_demo_prints_a_console_url_whose_console_shows_the_demo(
    tmp_path: Path, demo_db: str
) -> None:
    redis.Redis.from_url(DEMO_REDIS).flushdb()
    settings = {
        "CLARION_DATABASE_URL": demo_db,
        "CLARION_BROKER_URL": DEMO_REDIS,
        "CLARION_REDIS_URL": DEMO_REDIS,
    }
    done = subprocess.run(
        [sys.executable, "-m", "clarion", "demo"],
        cwd=tmp_path,
        env=web_env(settings),
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"http://127\.0\.0\.1:8080/console/login#key=(clk_\S+)", last)
    assert match, done.stdout[-2000:]
    key = match.group(1)

    web = start_web(settings, tmp_path)
    try:
        with web.client(follow_redirects=True) as http:
            form = http.get("/console/login").text
            csrf = re.search(r'name="csrf" value="([^"]+)"', form)
            assert csrf
            signed = http.post("/console/login", data={"key": key, "csrf": csrf.group(1)})
            assert signed.status_code == 200 and "Farm status" in signed.text
            listing = html.unescape(http.get("/console/notifications").text)
        engine = make_engine(demo_db)
        with engine.connect() as c:
            rows = c.execute(sa.text("SELECT notification_id, title FROM notifications")).all()
        engine.dispose()
        assert len(rows) == 7
        for row in rows:
            assert str(row.notification_id) in listing and row.title in listing
    finally:
        web.stop()
