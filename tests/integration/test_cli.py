"""The ``clarion`` command line as a subprocess: migrations, settings, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from testdb import create_database, drop_database

from clarion import migrate

pytestmark = pytest.mark.postgres


def clarion(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clarion", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def empty_db() -> Iterator[str]:
    url = create_database("clarion_cli")
    yield url
    drop_database(url)


def test_db_upgrade_current_check_downgrade(empty_db: str) -> None:
    env = {"CLARION_DATABASE_URL": empty_db}
    before = clarion("db", "current", env=env)
    assert before.returncode == 0, before.stderr
    assert "not migrated" in before.stdout

    up = clarion("db", "upgrade", env=env)
    assert up.returncode == 0, up.stderr
    assert f"database at {migrate.head()}" in up.stdout

    current = clarion("db", "current", env=env)
    assert "up to date" in current.stdout

    check = clarion("db", "check", env=env)
    assert check.returncode == 0, check.stderr
    assert "match" in check.stdout

    down = clarion("db", "downgrade", "base", env=env)
    assert down.returncode == 0, down.stderr
    assert "base" in down.stdout
    assert "not migrated" in clarion("db", "current", env=env).stdout


def test_bad_setting_names_the_variable_and_exits_3() -> None:
    result = clarion("db", "current", env={"CLARION_BATCH_SIZE": "lots"})
    assert result.returncode == 3
    assert "CLARION_BATCH_SIZE" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreachable_database_is_one_line_and_exits_4() -> None:
    result = clarion(
        "db", "current", env={"CLARION_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}
    )
    assert result.returncode == 4
    assert result.stderr.startswith("clarion: database unreachable")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_arguments_exit_2() -> None:
    result = clarion("db", "sideways")
    assert result.returncode == 2


def test_settings_masks_secrets() -> None:
    result = clarion("settings", env={"CLARION_TWILIO_AUTH_TOKEN": "very-secret-token"})
    assert result.returncode == 0
    assert "very-secret-token" not in result.stdout
    assert "CLARION_TWILIO_AUTH_TOKEN = ********" in result.stdout
