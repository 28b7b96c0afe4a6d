"""``clarion address add|list|disable`` as a subprocess, and passwords masked in output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

pytestmark = pytest.mark.postgres

AMQP_URL = os.environ.get("CLARION_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def clarion(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clarion", *args],
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def with_password(url: str, password: str) -> str:
    """The test database's URL with a password (ignored by trust auth, but printed if leaked)."""
    return sa.make_url(url).set(password=password).render_as_string(hide_password=False)


def test_add_list_disable(pg_url: str, clean_db: Engine) -> None:
    env = {"CLARION_DATABASE_URL": pg_url, "CLARION_WEBHOOK_ALLOW_PRIVATE": "false"}
    user = str(uuid.uuid4())

    added = clarion("address", "add", user, "webhook", "https://93.184.215.14/hooks/x", env=env)
    assert added.returncode == 0, added.stderr
    [secret] = [w for w in added.stdout.split() if w.startswith("whsec_")]
    assert added.stdout.count(secret) == 1
    with clean_db.connect() as conn:
        stored = conn.execute(sa.text("SELECT secret FROM user_addresses")).scalar_one()
    assert stored == secret

    email = clarion(
        "address", "add", user, "email", "alice@example.com", "--label", "work", env=env
    )
    assert email.returncode == 0, email.stderr
    assert "alice@example.com" not in email.stdout and "a***@example.com" in email.stdout

    listed = clarion("address", "list", user, env=env)
    assert listed.returncode == 0, listed.stderr
    assert secret not in listed.stdout and "whsec_" not in listed.stdout
    assert "https://93.184.215.14/***" in listed.stdout and "/hooks/x" not in listed.stdout
    assert "a***@example.com [work]" in listed.stdout

    as_json = json.loads(clarion("address", "list", user, "--json", env=env).stdout)
    webhook_id = next(a["address_id"] for a in as_json if a["channel"] == "webhook")
    assert [(a["channel"], a["signed"]) for a in as_json] == [("email", False), ("webhook", True)]

    gone = clarion("address", "disable", webhook_id, "--reason", "endpoint retired", env=env)
    assert gone.returncode == 0, gone.stderr
    after = json.loads(clarion("address", "list", user, "--json", env=env).stdout)
    assert [a["channel"] for a in after] == ["email"]
    every = json.loads(clarion("address", "list", user, "--all", "--json", env=env).stdout)
    assert ("webhook", False, "endpoint retired") in [
        (a["channel"], a["active"], a["disabled_reason"]) for a in every
    ]


def test_a_secret_from_stdin_is_never_printed(pg_url: str, clean_db: Engine) -> None:
    env = {"CLARION_DATABASE_URL": pg_url, "CLARION_WEBHOOK_ALLOW_PRIVATE": "false"}
    mine = "whsec_" + "QUJD" * 8  # base64 of 24 bytes
    added = clarion(
        "address",
        "add",
        str(uuid.uuid4()),
        "webhook",
        "https://93.184.215.14/h",
        "--secret-stdin",
        env=env,
        stdin=mine + "\n",
    )
    assert added.returncode == 0, added.stderr
    assert mine not in added.stdout + added.stderr and "whsec_" not in added.stdout
    with clean_db.connect() as conn:
        assert conn.execute(sa.text("SELECT secret FROM user_addresses")).scalar_one() == mine


def test_bad_input_exits_2_naming_the_argument_and_unknown_id_exits_6(
    pg_url: str, clean_db: Engine
) -> None:
    env = {"CLARION_DATABASE_URL": pg_url, "CLARION_WEBHOOK_ALLOW_PRIVATE": "false"}
    bad = clarion("address", "add", str(uuid.uuid4()), "email", "not-an-email", env=env)
    assert bad.returncode == 2
    assert "address: not a valid email address" in bad.stderr and "Traceback" not in bad.stderr
    private = clarion("address", "add", str(uuid.uuid4()), "webhook", "https://10.0.0.7/h", env=env)
    assert private.returncode == 2 and "not public" in private.stderr
    missing = clarion("address", "disable", str(uuid.uuid4()), env=env)
    assert missing.returncode == 6 and "not found" in missing.stderr
    with clean_db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM user_addresses")).scalar_one() == 0


# --- passwords inside URL settings -----------------------------------------------------


def test_settings_and_status_never_print_a_password(pg_url: str, clean_db: Engine) -> None:
    env = {
        "CLARION_DATABASE_URL": with_password(pg_url, "s3cret-db"),
        "CLARION_BROKER_URL": AMQP_URL.replace("guest:guest@", "guest:s3cret-broker@"),
        "CLARION_REDIS_URL": "redis://:s3cret-redis@127.0.0.1:6379/9",
    }
    shown = clarion("settings", env=env)
    assert shown.returncode == 0, shown.stderr
    for password in ("s3cret-db", "s3cret-broker", "s3cret-redis"):
        assert password not in shown.stdout + shown.stderr
    assert "postgres:***@" in shown.stdout and ":***@127.0.0.1:6379/9" in shown.stdout

    # RabbitMQ refuses the wrong password, so the status run uses the real one
    # for the broker; the database (trust auth) accepts any.
    env["CLARION_BROKER_URL"] = AMQP_URL
    status = clarion("status", "--json", env=env)
    assert status.returncode in (0, 7), status.stderr
    assert "s3cret-db" not in status.stdout + status.stderr
    assert json.loads(status.stdout)["broker"] == "rabbitmq"


@pytest.mark.parametrize(
    "broker",
    ["redis://:s3cret-broker@127.0.0.1:6461/0", "amqp://guest:s3cret-broker@127.0.0.1:6462/"],
)
def test_an_unreachable_broker_error_masks_the_password(
    pg_url: str, clean_db: Engine, broker: str
) -> None:
    env = {"CLARION_DATABASE_URL": with_password(pg_url, "s3cret-db"), "CLARION_BROKER_URL": broker}
    result = clarion("status", env=env)
    assert result.returncode == 5, result.stderr
    assert "broker unreachable" in result.stderr
    assert "s3cret" not in result.stdout + result.stderr


def test_an_unreachable_database_error_masks_the_password() -> None:
    env = {"CLARION_DATABASE_URL": "postgresql://postgres:s3cret-db@127.0.0.1:6463/clarion"}
    result = clarion("status", env=env)
    assert result.returncode == 4, result.stderr
    assert "database unreachable" in result.stderr and "s3cret" not in result.stderr


def test_scheduler_start_up_log_names_its_database_and_broker_without_passwords(
    pg_url: str, clean_db: Engine
) -> None:
    env = {
        "CLARION_DATABASE_URL": with_password(pg_url, "s3cret-db"),
        # Nothing is due, so the broker is never contacted (Redis has no password here).
        "CLARION_BROKER_URL": "redis://:s3cret-broker@127.0.0.1:6379/9",
    }
    result = clarion("scheduler", "--once", env=env)
    assert result.returncode == 0, result.stderr
    assert "scheduler: database postgresql" in result.stderr
    assert "postgres:***@" in result.stderr and "redis://:***@127.0.0.1:6379/9" in result.stderr
    assert "s3cret" not in result.stdout + result.stderr


def test_worker_start_up_log_masks_passwords(pg_url: str) -> None:
    env = {
        "CLARION_DATABASE_URL": with_password(pg_url, "s3cret-db"),
        "CLARION_BROKER_URL": "redis://:s3cret-broker@127.0.0.1:6379/9",
    }
    # The module `clarion worker` hands to each Dramatiq process: importing it logs.
    result = subprocess.run(
        [sys.executable, "-c", "import workers.entry"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "worker: database postgresql" in result.stderr
    assert "redis://:***@127.0.0.1:6379/9" in result.stderr
    assert "s3cret" not in result.stderr
