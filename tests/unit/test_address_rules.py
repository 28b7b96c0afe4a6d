"""The address and secret checks of ``clarion.add_address``, and the CLI's URL masking."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clarion.addresses import check_address, check_secret
from clarion.cli import masked
from clarion.core.errors import ValidationError
from models.enums import Channel

ANY_VALUE = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec=None, categories=["Cs", "Cc"])),
    st.text(min_size=2000, max_size=5000),
    st.binary(),
    st.integers(),
    st.none(),
    st.lists(st.text(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)


@given(channel=st.sampled_from(list(Channel)), value=ANY_VALUE)
def test_an_address_is_accepted_as_given_or_refused_naming_the_argument(
    channel: Channel, value: object
) -> None:
    # allow_private: no DNS look-ups for the random host names hypothesis makes.
    try:
        accepted = check_address(channel, value, allow_private=True)
    except ValidationError as exc:
        assert exc.field in ("address", "channel")
        return
    assert accepted == value and isinstance(accepted, str)
    assert "\x00" not in accepted and len(accepted) <= 2048
    accepted.encode("utf-8")  # storable: no lone surrogates


@given(value=ANY_VALUE)
def test_a_secret_is_a_standard_webhooks_secret_or_refused(value: object) -> None:
    try:
        accepted = check_secret(value)
    except ValidationError as exc:
        assert exc.field == "secret"
        return
    assert isinstance(accepted, str) and accepted.startswith("whsec_")
    assert 24 <= len(base64.b64decode(accepted[6:])) <= 64


@given(key=st.binary(max_size=100))
def test_a_secret_holds_24_to_64_bytes(key: bytes) -> None:
    secret = "whsec_" + base64.b64encode(key).decode()
    if 24 <= len(key) <= 64:
        assert check_secret(secret) == secret
    else:
        with pytest.raises(ValidationError, match="must encode 24 to 64 bytes"):
            check_secret(secret)


@pytest.mark.parametrize(
    ("channel", "address"),
    [
        (Channel.EMAIL, "a@\x00example.com"),
        (Channel.SMS, "+1415555\ud8000101"),
        (Channel.PUSH, "x" * 2049),
        (Channel.WEBHOOK, "https://ex\x00ample.com/h"),
        (Channel.WEBHOOK, "https://example.com/\udc80"),
    ],
)
def test_nul_surrogates_and_huge_values_are_refused(channel: Channel, address: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check_address(channel, address, allow_private=True)
    assert caught.value.field == "address"


def test_masked_hides_the_password_of_every_url_in_a_text() -> None:
    text = (
        "cannot reach amqp://clarion:p4ss@rabbit:5672/ (refused); "
        "fallback 'redis://:r3dis@cache:6379/0' and postgresql://app@db/clarion"
    )
    shown = masked(text)
    assert "p4ss" not in shown and "r3dis" not in shown
    assert "amqp://clarion:***@rabbit:5672/" in shown
    assert "redis://:***@cache:6379/0" in shown
    assert "postgresql://app@db/clarion" in shown  # no password: unchanged
