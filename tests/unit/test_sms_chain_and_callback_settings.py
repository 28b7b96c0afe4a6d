"""The SMS failover chain built from the settings, and the status callbacks' settings."""

from __future__ import annotations

import pytest

from channels.registry import Providers, failover_chains
from clarion.core.errors import SettingsError
from clarion.core.settings import Settings
from models.callbacks import callback_events
from models.enums import Channel

TWILIO = {
    "CLARION_TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
    "CLARION_TWILIO_AUTH_TOKEN": "token-one",
    "CLARION_TWILIO_FROM": "+15005550006",
    "CLARION_TWILIO_BASE_URL": "http://127.0.0.1:9",
}
SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3"


def test_sms_chain_of_two_accounts() -> None:
    settings = Settings.from_env(
        {
            **TWILIO,
            "CLARION_SMS_PROVIDERS": "twilio,twilio_backup",
            "CLARION_TWILIO_BACKUP_ACCOUNT_SID": "AC" + "2" * 32,
            "CLARION_TWILIO_BACKUP_AUTH_TOKEN": "token-two",
            "CLARION_TWILIO_BACKUP_FROM": "+15005550009",
        }
    )
    assert failover_chains(settings) == {Channel.SMS: ("twilio", "twilio_backup")}
    providers = Providers(settings)
    try:
        assert [p.name for p in providers.chain(Channel.SMS)] == ["twilio", "twilio_backup"]
    finally:
        providers.close()


def test_backup_messaging_service_shares_the_first_account() -> None:
    settings = Settings.from_env(
        {
            **TWILIO,
            "CLARION_SMS_PROVIDERS": "twilio,twilio_backup",
            "CLARION_TWILIO_BACKUP_MESSAGING_SERVICE_SID": "MG" + "3" * 32,
        }
    )
    providers = Providers(settings)
    try:
        assert [p.name for p in providers.chain(Channel.SMS)] == ["twilio", "twilio_backup"]
    finally:
        providers.close()


def test_an_unconfigured_backup_is_left_out_and_one_provider_has_no_chain() -> None:
    settings = Settings.from_env({**TWILIO, "CLARION_SMS_PROVIDERS": "twilio,twilio_backup"})
    providers = Providers(settings)
    try:
        assert [p.name for p in providers.chain(Channel.SMS)] == ["twilio"]
    finally:
        providers.close()
    assert failover_chains(Settings.from_env(TWILIO)) == {}


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"CLARION_SMS_PROVIDERS": "twilio,nexmo"}, "CLARION_SMS_PROVIDERS"),
        ({"CLARION_SMS_PROVIDERS": "twilio,twilio"}, "CLARION_SMS_PROVIDERS"),
        ({"CLARION_TWILIO_BACKUP_ACCOUNT_SID": "AC2"}, "CLARION_TWILIO_BACKUP_AUTH_TOKEN"),
        ({"CLARION_STATUS_CALLBACK_URL": "https://p.example/cb"}, "CLARION_STATUS_CALLBACK_SECRET"),
        ({"CLARION_STATUS_CALLBACK_URL": "ftp://p.example/cb"}, "CLARION_STATUS_CALLBACK_URL"),
        ({"CLARION_STATUS_CALLBACK_URL": "https://u:p@p.example/"}, "CLARION_STATUS_CALLBACK_URL"),
        ({"CLARION_STATUS_CALLBACK_SECRET": "plain-secret"}, "CLARION_STATUS_CALLBACK_SECRET"),
        ({"CLARION_STATUS_CALLBACK_SECRET": "whsec_c2hvcnQ="}, "CLARION_STATUS_CALLBACK_SECRET"),
        ({"CLARION_STATUS_CALLBACK_EVENTS": "sent,opened"}, "CLARION_STATUS_CALLBACK_EVENTS"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable


def test_callback_events_only_with_a_url() -> None:
    assert callback_events(Settings.from_env({"CLARION_STATUS_CALLBACK_EVENTS": "sent"})) == set()
    on = Settings.from_env(
        {
            "CLARION_STATUS_CALLBACK_URL": "http://10.0.0.5/clarion",
            "CLARION_STATUS_CALLBACK_SECRET": SECRET,
            "CLARION_STATUS_CALLBACK_EVENTS": "delivered, bounced",
        }
    )
    assert callback_events(on) == {"delivered", "bounced"}
    assert callback_events(
        Settings.from_env(
            {
                "CLARION_STATUS_CALLBACK_URL": "https://p.example/",
                "CLARION_STATUS_CALLBACK_SECRET": SECRET,
            }
        )
    ) == {"sent", "delivered", "failed", "bounced"}
