"""``clarion demo`` end to end: embedded (nothing running) and configured (PostgreSQL + Redis)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from testdb import create_database, drop_database

DEMO_REDIS = os.environ.get("CLARION_TEST_DEMO_REDIS_URL", "redis://127.0.0.1:6379/11")


def run_demo(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    return subprocess.run(
        [sys.executable, "-m", "clarion", "demo"],
        cwd=cwd,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=110,
    )


def check_report(output: str) -> None:
    # Six auction notifications reach at least one channel; the seventh dead-letters.
    rows = re.findall(r"│ (\S.*?)\s+│ (delivered|sent|failed|pending|cancelled)\s+│", output)
    statuses = [status for _, status in rows]
    assert statuses.count("delivered") == 6, output
    assert statuses.count("failed") == 1, output
    assert "dead-letter queue: 1 message(s)" in output
    assert "RetryableError" in output  # the dead-lettered one's last error
    assert "UNREGISTERED" in output  # bob's uninstalled app: a bad address
    for provider_id in ("MessageId=", "sid=SM", "name=", "status=200"):
        assert provider_id in output
    # One email in German and one in Arabic, each with the layout's HTML and a text part.
    assert statuses.count("sent") == 2, output
    assert (
        "email to erika@example.de: Sie wurden überboten "
        "(multipart/alternative: text/plain + text/html, lang=de dir=ltr)"
    ) in output
    assert (
        "email to amira@example.ae: انتهى المزاد "
        "(multipart/alternative: text/plain + text/html, lang=ar dir=rtl)"
    ) in output


@pytest.mark.timeout(120)
def test_demo_runs_embedded_with_nothing_configured(tmp_path: Path) -> None:
    result = run_demo(tmp_path, {})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Embedded mode" in result.stdout
    check_report(result.stdout)
    assert (tmp_path / "clarion-demo.db").exists()
    assert "Traceback" not in result.stderr


@pytest.fixture
def demo_db() -> Iterator[str]:
    url = create_database("clarion_demo")
    yield url
    drop_database(url)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(120)
def test_demo_runs_on_postgresql_and_redis(tmp_path: Path, demo_db: str) -> None:
    redis.Redis.from_url(DEMO_REDIS).flushdb()
    result = run_demo(
        tmp_path,
        {
            "CLARION_DATABASE_URL": demo_db,
            "CLARION_BROKER_URL": DEMO_REDIS,
            "CLARION_REDIS_URL": DEMO_REDIS,
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configured mode" in result.stdout
    check_report(result.stdout)
    assert not (tmp_path / "clarion-demo.db").exists()
