"""``clarion.add_address`` / ``disable_address`` / ``list_addresses`` against PostgreSQL."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

import clarion
from channels.webhook import sign
from clarion.core.settings import Settings, reset_settings
from models.enums import Channel

pytestmark = pytest.mark.postgres


@pytest.fixture
def public_only(settings: Settings) -> Iterator[Settings]:
    """Settings as in production: webhooks only to public https hosts."""
    strict = dataclasses.replace(settings, webhook_allow_private=False)
    reset_settings(strict)
    yield strict
    reset_settings(settings)


def _rows(engine: Engine) -> list[sa.Row[tuple[object, ...]]]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT user_id, channel::text, address, secret, label, is_active,"
                    " disabled_reason FROM user_addresses ORDER BY created_at"
                )
            )
        )


def test_add_list_disable_round_trip(clean_db: Engine, settings: Settings) -> None:
    user = uuid.uuid4()
    email = clarion.add_address(user, "email", "alice@example.com", label="work")
    sms = clarion.add_address(str(user), Channel.SMS, "+14155550101")
    assert email.is_active and email.label == "work"
    assert not email.has_secret and email.secret is None and sms.secret is None

    listed = clarion.list_addresses(user)
    assert [(a.channel.value, a.address) for a in listed] == [
        ("email", "alice@example.com"),
        ("sms", "+14155550101"),
    ]
    assert [a.address for a in clarion.list_addresses(user, channel="sms")] == ["+14155550101"]

    gone = clarion.disable_address(sms.address_id, reason="number ported")
    assert not gone.is_active and gone.disabled_reason == "number ported"
    assert gone.disabled_at is not None
    assert [a.channel.value for a in clarion.list_addresses(user)] == ["email"]
    everything = clarion.list_addresses(user, include_disabled=True)
    assert [(a.channel.value, a.is_active) for a in everything] == [
        ("email", True),
        ("sms", False),
    ]
    rows = _rows(clean_db)
    assert [(r.channel, r.address, r.is_active, r.disabled_reason) for r in rows] == [
        ("email", "alice@example.com", True, None),
        ("sms", "+14155550101", False, "number ported"),
    ]


def test_webhook_secret_is_generated_returned_once_and_signs_deliveries(
    clean_db: Engine, public_only: Settings
) -> None:
    user = uuid.uuid4()
    added = clarion.add_address(user, "webhook", "https://93.184.215.14/hooks/clarion")
    assert added.secret is not None and added.secret.startswith("whsec_")
    assert len(base64.b64decode(added.secret.removeprefix("whsec_"))) == 32
    assert added.secret not in repr(added)
    [row] = _rows(clean_db)
    assert row.secret == added.secret
    [listed] = clarion.list_addresses(user)
    assert listed.has_secret and listed.secret is None

    # The README's contract: a Standard Webhooks library verifies what the
    # channel signs with this secret.
    from standardwebhooks.webhooks import Webhook

    body = json.dumps({"type": "notification", "data": {"title": "Outbid"}})
    msg_id, timestamp = str(uuid.uuid4()), int(time.time())
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(added.secret, msg_id, timestamp, body),
    }
    assert Webhook(added.secret).verify(body, headers) == {
        "type": "notification",
        "data": {"title": "Outbid"},
    }


def test_a_given_secret_is_kept_and_a_disabled_address_comes_back(
    clean_db: Engine, public_only: Settings
) -> None:
    user = uuid.uuid4()
    mine = "whsec_" + base64.b64encode(b"k" * 24).decode()
    first = clarion.add_address(user, "webhook", "https://93.184.215.14/h", secret=mine)
    assert first.secret == mine
    with pytest.raises(clarion.ValidationError) as again:
        clarion.add_address(user, "webhook", "https://93.184.215.14/h")
    assert again.value.field == "address"

    clarion.disable_address(first.address_id)
    back = clarion.add_address(user, "webhook", "https://93.184.215.14/h", label="new")
    assert back.address_id == first.address_id and back.is_active
    assert back.secret is not None and back.secret != mine
    [row] = _rows(clean_db)
    assert row.is_active and row.secret == back.secret and row.disabled_reason is None


_KEY = "whsec_" + base64.b64encode(b"s" * 32).decode()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"user_id": "nope", "channel": "email", "address": "a@example.com"}, "user_id"),
        ({"channel": "fax", "address": "a@example.com"}, "channel"),
        ({"channel": "in_app", "address": "anything"}, "channel"),
        ({"channel": "email", "address": "not-an-email"}, "address"),
        ({"channel": "email", "address": " a@example.com"}, "address"),
        ({"channel": "email", "address": "a\x00@example.com"}, "address"),
        ({"channel": "email", "address": 42}, "address"),
        ({"channel": "sms", "address": "004414155550101"}, "address"),
        ({"channel": "push", "address": "short"}, "address"),
        ({"channel": "push", "address": "token with spaces in it"}, "address"),
        ({"channel": "webhook", "address": "http://93.184.215.14/h"}, "address"),
        ({"channel": "webhook", "address": "ftp://93.184.215.14/h"}, "address"),
        ({"channel": "webhook", "address": "https://127.0.0.1/h"}, "address"),
        ({"channel": "webhook", "address": "https://localhost:8443/h"}, "address"),
        ({"channel": "webhook", "address": "https://10.1.2.3/h"}, "address"),
        ({"channel": "webhook", "address": "https://[::ffff:192.168.0.1]/h"}, "address"),
        ({"channel": "webhook", "address": "https://169.254.169.254/latest"}, "address"),
        ({"channel": "webhook", "address": "https://u:pw@93.184.215.14/h"}, "address"),
        ({"channel": "webhook", "address": "https://[::1/h"}, "address"),
        ({"channel": "email", "address": "a@example.com", "label": "x" * 101}, "label"),
        ({"channel": "email", "address": "a@example.com", "secret": _KEY}, "secret"),
        ({"channel": "webhook", "address": "https://93.184.215.14/h", "secret": "plain"}, "secret"),
        (
            {"channel": "webhook", "address": "https://93.184.215.14/h", "secret": "whsec_!!"},
            "secret",
        ),
        (
            {"channel": "webhook", "address": "https://93.184.215.14/h", "secret": "whsec_YWJj"},
            "secret",
        ),
    ],
)
def test_bad_input_names_the_argument_and_writes_nothing(
    clean_db: Engine, public_only: Settings, kwargs: dict[str, object], field: str
) -> None:
    arguments: dict[str, object] = {"user_id": uuid.uuid4(), **kwargs}
    with pytest.raises(clarion.ValidationError) as caught:
        clarion.add_address(**arguments)  # type: ignore[arg-type]
    assert caught.value.field == field, caught.value
    assert _rows(clean_db) == []


def test_private_endpoints_are_accepted_where_the_channel_allows_them(
    clean_db: Engine, settings: Settings
) -> None:
    # The test settings allow private endpoints (the sandboxes are on loopback),
    # as CLARION_WEBHOOK_ALLOW_PRIVATE does for the webhook channel.
    added = clarion.add_address(uuid.uuid4(), "webhook", "http://127.0.0.1:8080/h")
    assert added.is_active


def test_disable_an_unknown_address_is_not_found(clean_db: Engine, settings: Settings) -> None:
    with pytest.raises(clarion.NotFoundError):
        clarion.disable_address(uuid.uuid4())
    with pytest.raises(clarion.ValidationError) as caught:
        clarion.disable_address("not-a-uuid")
    assert caught.value.field == "address_id"


def test_with_a_session_the_address_joins_the_callers_transaction(
    clean_db: Engine, settings: Settings
) -> None:
    user = uuid.uuid4()
    with sessionmaker(clean_db)() as session:
        clarion.add_address(user, "email", "bob@example.com", session=session)
        assert [a.address for a in clarion.list_addresses(user, session=session)] == [
            "bob@example.com"
        ]
        session.rollback()
    assert _rows(clean_db) == []

    with Session(clean_db) as session, session.begin():
        clarion.add_address(user, "email", "bob@example.com", session=session)
    assert [r.address for r in _rows(clean_db)] == ["bob@example.com"]
