"""Every setting's parser, fed anything: a value is read, or SettingsError names the
variable. Never another exception, which the CLI would report as a crash (exit 1)
instead of a bad setting (exit 3)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clarion.core.errors import SettingsError
from clarion.core.settings import Settings

VARIABLES = sorted(f.metadata["env"] for f in dataclasses.fields(Settings))
#: (variable set, variable a cross-check names): settings read together.
CROSS_CHECKS = {
    ("CLARION_RETRY_MIN_BACKOFF", "CLARION_RETRY_MAX_BACKOFF"),
    ("CLARION_EVENT_HISTORY_SECONDS", "CLARION_RETENTION_EVENTS_DAYS"),
    ("CLARION_WEB_WORKERS", "CLARION_WEB_SESSION_SECRET"),
    ("CLARION_STATUS_CALLBACK_URL", "CLARION_STATUS_CALLBACK_SECRET"),
    ("CLARION_TWILIO_BACKUP_ACCOUNT_SID", "CLARION_TWILIO_BACKUP_AUTH_TOKEN"),
    ("CLARION_TWILIO_BACKUP_AUTH_TOKEN", "CLARION_TWILIO_BACKUP_ACCOUNT_SID"),
}

awkward = st.one_of(
    st.text(max_size=50),
    st.text(alphabet=st.sampled_from("0123456789.-+eE_xXinfatyesno \x00"), max_size=30),
    st.sampled_from(
        ["", " ", "nan", "inf", "-inf", "1e400", "-1", "0", "9" * 400, "\x00", "\ud800", "1_000"]
    ),
    st.text(min_size=5_000, max_size=5_000),
)


@pytest.mark.parametrize("variable", VARIABLES)
@settings(max_examples=40, deadline=None)
@given(value=awkward)
def test_a_setting_is_read_or_refused_naming_its_variable(variable: str, value: str) -> None:
    try:
        Settings.from_env({variable: value})
    except SettingsError as exc:
        # The variable named is the one given, or the one it is checked against.
        assert exc.variable == variable or (variable, exc.variable) in CROSS_CHECKS, exc
