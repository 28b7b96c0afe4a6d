"""``clarion settings`` shows every setting but never a secret's value (Settings.describe)."""

from __future__ import annotations

import dataclasses

from clarion.core.settings import Settings

SECRETS = {
    "CLARION_AWS_ACCESS_KEY_ID": "AKIDEXAMPLE1234",
    "CLARION_AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-example-key",
    "CLARION_SMTP_USERNAME": "mailer@example.com",
    "CLARION_SMTP_PASSWORD": "hunter2-smtp",
    "CLARION_TWILIO_ACCOUNT_SID": "AC0123456789abcdef",
    "CLARION_TWILIO_AUTH_TOKEN": "twilio-token-0123",
    "CLARION_JWT_SECRET": "jwt-secret-0123456789abcdef0123456789",
    "CLARION_UNSUBSCRIBE_SECRET": "unsubscribe-secret-0123456789abcdef",
    "CLARION_WEB_SESSION_SECRET": "web-session-secret-0123456789abcdef",
    "CLARION_TWILIO_BACKUP_ACCOUNT_SID": "AC9876543210fedcba",
    "CLARION_TWILIO_BACKUP_AUTH_TOKEN": "twilio-backup-token-0123",
    "CLARION_STATUS_CALLBACK_SECRET": "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3",
}


def shown(settings: Settings) -> dict[str, str]:
    return {variable: value for variable, value, _ in settings.describe()}


def test_every_secret_setting_is_in_the_test_list() -> None:
    """A new secret setting must be added above, so that its masking is tested."""
    secret = {f.metadata["env"] for f in dataclasses.fields(Settings) if f.metadata["secret"]}
    assert secret == set(SECRETS)


def test_set_secrets_are_masked() -> None:
    values = shown(Settings.from_env(SECRETS))
    for variable in SECRETS:
        assert values[variable] == "********", variable
    text = "\n".join(f"{v} {s} {d}" for v, s, d in Settings.from_env(SECRETS).describe())
    for secret in SECRETS.values():
        assert secret not in text


def test_unset_secrets_say_unset() -> None:
    values = shown(Settings.from_env({}))
    for variable in SECRETS:
        assert values[variable] == "(unset)", variable


def test_other_settings_are_shown_as_set() -> None:
    values = shown(
        Settings.from_env(
            {
                "CLARION_BATCH_SIZE": "42",
                "CLARION_SMTP_HOST": "mail.example.com",
                "CLARION_PLATFORM_FOREIGN_KEYS": "yes",
            }
        )
    )
    assert values["CLARION_BATCH_SIZE"] == "42"
    assert values["CLARION_SMTP_HOST"] == "mail.example.com"
    assert values["CLARION_PLATFORM_FOREIGN_KEYS"] == "True"
    assert values["CLARION_DATABASE_URL"] == "(unset)"


def test_each_setting_is_described_once_with_its_doc() -> None:
    rows = Settings().describe()
    variables = [variable for variable, _, _ in rows]
    assert len(variables) == len(set(variables)) == len(dataclasses.fields(Settings))
    assert all(doc.strip() for _, _, doc in rows)


def test_passwords_inside_urls_are_masked() -> None:
    values = shown(
        Settings.from_env(
            {
                "CLARION_DATABASE_URL": "postgresql://clarion:db-pass-123@db:5432/clarion",
                "CLARION_BROKER_URL": "amqp://guest:rabbit-pass@rabbit:5672/",
                "CLARION_REDIS_URL": "redis://:redis-pass@cache:6379/0",
            }
        )
    )
    assert values["CLARION_DATABASE_URL"] == "postgresql://clarion:***@db:5432/clarion"
    assert values["CLARION_BROKER_URL"] == "amqp://guest:***@rabbit:5672/"
    assert values["CLARION_REDIS_URL"] == "redis://:***@cache:6379/0"


def test_safe_url_leaves_urls_without_a_password_alone() -> None:
    from clarion.core.settings import safe_url

    assert safe_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert safe_url("postgresql://clarion@db/clarion") == "postgresql://clarion@db/clarion"
    assert safe_url("notifications@clarion.invalid") == "notifications@clarion.invalid"
    assert safe_url("amqp://u:p@host:notaport/") == "amqp://u:***@host:notaport/"
    # Unparseable: only what follows the credentials is kept.
    assert safe_url("redis://u:p@[::1/0") == "[::1/0"
