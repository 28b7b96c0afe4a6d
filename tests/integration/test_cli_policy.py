"""``clarion prefs ...`` and ``clarion cancel`` as subprocesses: rows written, bad input named."""

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


def clarion(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clarion", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_prefs_round_trip(pg_url: str, clean_db: Engine) -> None:
    env = {"CLARION_DATABASE_URL": pg_url}
    user = str(uuid.uuid4())
    assert clarion("prefs", "opt-out", user, "sms", env=env).stdout.strip() == "opted out of sms"
    again = clarion("prefs", "opt-out", user, "sms", env=env)
    assert again.stdout.strip() == "already opted out of sms"
    out = clarion("prefs", "opt-out", user, "email", "--category", "bid", env=env)
    assert out.returncode == 0, out.stderr
    quiet = clarion("prefs", "quiet-hours", user, "22:00", "07:00", "--tz", "Europe/Paris", env=env)
    assert quiet.stdout.strip() == "quiet hours 22:00-07:00 Europe/Paris"
    shown = json.loads(clarion("prefs", "show", user, "--json", env=env).stdout)
    assert shown["opt_outs"] == [
        {"channel": "email", "category": "bid"},
        {"channel": "sms", "category": None},
    ]
    assert shown["quiet_hours"] == {"start": "22:00", "end": "07:00", "time_zone": "Europe/Paris"}
    assert clarion("prefs", "opt-in", user, "sms", env=env).returncode == 0
    assert clarion("prefs", "quiet-hours", user, "--clear", env=env).returncode == 0
    shown = json.loads(clarion("prefs", "show", user, "--json", env=env).stdout)
    assert shown["opt_outs"] == [{"channel": "email", "category": "bid"}]
    assert shown["quiet_hours"] is None


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["prefs", "quiet-hours", "U", "22:00", "07:00", "--tz", "Mars/Olympus"], "time_zone"),
        (["prefs", "quiet-hours", "U", "25:00", "07:00", "--tz", "UTC"], "start"),
        (["prefs", "opt-out", "U", "pigeon"], "channel"),
        (["prefs", "opt-out", "U", "sms", "--category", "gossip"], "category"),
        (["prefs", "opt-out", "not-a-uuid", "sms"], "user_id"),
        (["cancel"], "cancel"),
        (["cancel", "--auction", "A", "--template", "nope"], "template"),
    ],
)
def test_bad_input_exits_2_naming_it(
    pg_url: str, clean_db: Engine, args: list[str], named: str
) -> None:
    user, auction = str(uuid.uuid4()), str(uuid.uuid4())
    args = [user if a == "U" else auction if a == "A" else a for a in args]
    result = clarion(*args, env={"CLARION_DATABASE_URL": pg_url})
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert named in result.stderr
    with clean_db.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM user_opt_outs")) == 0
        assert conn.scalar(sa.text("SELECT count(*) FROM user_quiet_hours")) == 0


def test_cancel_by_key(pg_url: str, clean_db: Engine) -> None:
    user = uuid.uuid4()
    with clean_db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO notifications (user_id, notification_type, category, priority,"
                " title, message, delivery_channels, cancellation_key)"
                " VALUES (:u, 'email', 'auction', 'normal', 'T', 'M', '[\"email\"]', 'k1')"
            ),
            {"u": user},
        )
    out = clarion(
        "cancel", "--key", "k1", "--reason", "auction ended", env={"CLARION_DATABASE_URL": pg_url}
    )
    assert out.returncode == 0, out.stderr
    assert "of 1 notifications" in out.stdout
    with clean_db.connect() as conn:
        row = conn.execute(sa.text("SELECT status, error_message FROM notifications")).one()
    assert tuple(row) == ("cancelled", "auction ended")
