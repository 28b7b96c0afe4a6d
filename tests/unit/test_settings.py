from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from clarion.core.errors import SettingsError
from clarion.core.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.database_url is None
    assert settings.embedded
    assert settings.broker_url.startswith("redis://")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CLARION_DATABASE_URL", "mysql://x"),
        ("CLARION_BROKER_URL", "kafka://x"),
        ("CLARION_POLL_INTERVAL", "soon"),
        ("CLARION_POLL_INTERVAL", "-1"),
        ("CLARION_BATCH_SIZE", "0"),
        ("CLARION_PLATFORM_FOREIGN_KEYS", "maybe"),
        ("CLARION_EMAIL_PROVIDER", "pigeon"),
        ("CLARION_LOG_LEVEL", "LOUD"),
    ],
)
def test_bad_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({variable: value})
    assert info.value.variable == variable
    assert str(info.value).startswith(f"{variable}: ")


def test_backoff_bounds_are_checked_together() -> None:
    with pytest.raises(SettingsError, match="CLARION_RETRY_MAX_BACKOFF"):
        Settings.from_env({"CLARION_RETRY_MIN_BACKOFF": "10", "CLARION_RETRY_MAX_BACKOFF": "5"})


def test_values_are_parsed() -> None:
    settings = Settings.from_env(
        {
            "CLARION_DATABASE_URL": "postgresql://u@h/db",
            "CLARION_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672/",
            "CLARION_PLATFORM_FOREIGN_KEYS": "yes",
            "CLARION_BATCH_SIZE": "42",
            "CLARION_PROVIDER_TIMEOUT": "2.5",
        }
    )
    assert not settings.embedded
    assert settings.platform_foreign_keys is True
    assert settings.batch_size == 42
    assert settings.provider_timeout == 2.5


def test_describe_masks_secrets() -> None:
    settings = Settings.from_env(
        {"CLARION_TWILIO_AUTH_TOKEN": "tok-123", "CLARION_SMTP_PASSWORD": "pw-456"}
    )
    shown = "\n".join(value for _, value, _ in settings.describe())
    assert "tok-123" not in shown and "pw-456" not in shown
    assert "********" in shown


def test_readme_documents_every_setting() -> None:
    text = README.read_text()
    missing = [
        f.metadata["env"]
        for f in dataclasses.fields(Settings)
        if f"`{f.metadata['env']}`" not in text
    ]
    assert missing == []
