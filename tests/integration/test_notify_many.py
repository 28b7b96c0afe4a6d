"""``clarion.notify_many``: many users in one call, rendered per user, all or nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import clarion
from clarion.bulk import INSERT_BATCH
from clarion.core.errors import ValidationError
from clarion.core.settings import Settings
from models import Notification

pytestmark = pytest.mark.postgres

MONEY = {"amount": clarion.money("1234.5", "EUR")}


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM notifications")).scalar_one())


def test_each_user_gets_the_template_in_their_locale(
    session: Session, settings: Settings, clean_db: Engine
) -> None:
    german, arabic, plain = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    clarion.set_locale(german, "de", session=session)
    clarion.set_locale(arabic, "ar", session=session)
    session.commit()
    with session.begin():
        ids = clarion.notify_many(
            [
                {"user_id": german, "idempotency_key": f"outbid:1:{german}"},
                {"user_id": arabic, "idempotency_key": f"outbid:1:{arabic}"},
                {"user_id": str(plain), "idempotency_key": f"outbid:1:{plain}", "locale": "fr"},
            ],
            template="english/outbid",
            template_data=MONEY,
            action_url="https://auctions.example.com/a/1",
            action_label="Bid again",
            session=session,
        )
    rows = {r.notification_id: r for r in session.scalars(sa.select(Notification))}
    assert [rows[i].user_id for i in ids] == [german, arabic, plain]
    de, ar, fr = (rows[i] for i in ids)
    assert (de.locale, de.title) == ("de", "Sie wurden überboten")
    assert de.message == "Jemand hat mehr als Ihr Gebot von 1.234,50\u00a0€ geboten"
    assert ar.locale == "ar" and ar.email_html is not None and 'dir="rtl"' in ar.email_html
    assert (fr.locale, fr.title) == ("fr", "Votre enchère a été dépassée")
    assert de.idempotency_key == f"outbid:1:{german}"
    assert all(r.status.value == "pending" for r in rows.values())


def test_a_second_call_returns_the_first_rows_and_adds_only_new_users(
    settings: Settings, clean_db: Engine
) -> None:
    users = [uuid.uuid4() for _ in range(5)]

    def entries(us: list[uuid.UUID]) -> list[dict[str, Any]]:
        return [{"user_id": u, "idempotency_key": f"won:9:{u}"} for u in us]

    common: dict[str, Any] = {
        "title": "Auction ended",
        "message": "It is over",
        "category": "auction",
        "channels": ["in_app"],
    }
    first = clarion.notify_many(entries(users[:3]), **common)
    again = clarion.notify_many(entries(users), **common)
    assert again[:3] == first
    assert len(set(again)) == 5
    assert _count(clean_db) == 5


def test_a_bad_entry_is_named_and_nothing_is_written(settings: Settings, clean_db: Engine) -> None:
    good = [{"user_id": uuid.uuid4(), "template_data": MONEY} for _ in range(3)]
    cases: list[tuple[list[dict[str, Any]], str]] = [
        ([*good, {"user_id": "not-a-uuid", "template_data": MONEY}], "entries[3].user_id"),
        ([*good[:1], {"user_id": uuid.uuid4()}, *good[1:]], "entries[1].template_data"),
        ([*good[:2], {"user_id": uuid.uuid4(), "colour": "red"}], "entries[2].colour"),
        (
            [*good[:1], {"user_id": uuid.uuid4(), "template": ["english/outbid"]}],
            "entries[1].template",
        ),
        ([*good, {"template_data": MONEY}], "entries[3].user_id"),
        (
            [
                {"user_id": uuid.uuid4(), "template_data": MONEY, "idempotency_key": "k"},
                {"user_id": uuid.uuid4(), "template_data": MONEY, "idempotency_key": "k"},
            ],
            "entries[1].idempotency_key",
        ),
    ]
    for entries, field in cases:
        with pytest.raises(ValidationError) as caught:
            clarion.notify_many(entries, template="english/outbid")
        assert caught.value.field == field
    # Two entries of one call with one key: the earlier entry is named too.
    assert caught.value.problem == "is also the key of entries[0]"
    assert _count(clean_db) == 0


def test_a_key_held_by_another_user_leaves_nothing_in_the_callers_transaction(
    session: Session, settings: Settings, clean_db: Engine
) -> None:
    common: dict[str, Any] = {
        "title": "t",
        "message": "m",
        "category": "auction",
        "channels": ["in_app"],
    }
    clarion.notify(uuid.uuid4(), idempotency_key="taken", **common)
    with session.begin():
        with pytest.raises(ValidationError) as caught:
            clarion.notify_many(
                [
                    {"user_id": uuid.uuid4(), "idempotency_key": "fresh"},
                    {"user_id": uuid.uuid4(), "idempotency_key": "taken"},
                ],
                session=session,
                **common,
            )
        assert caught.value.field == "entries[1].idempotency_key"
        # The caller's transaction goes on, without the call's rows.
        assert session.scalar(sa.select(sa.func.count()).select_from(Notification)) == 1
    assert _count(clean_db) == 1


def test_thousands_of_watchers_in_one_call(settings: Settings, clean_db: Engine) -> None:
    users = [uuid.uuid4() for _ in range(2500)]
    ids = clarion.notify_many(
        [{"user_id": u, "idempotency_key": f"ended:5:{u}"} for u in users],
        template="english/outbid",
        template_data=MONEY,
        channels=["in_app"],
    )
    assert len(set(ids)) == 2500
    with clean_db.connect() as conn:
        stored = dict(
            conn.execute(sa.text("SELECT notification_id, user_id FROM notifications")).all()
        )
    assert [stored[i] for i in ids] == users


def test_rows_are_those_notify_writes(settings: Settings, clean_db: Engine) -> None:
    german = uuid.uuid4()
    clarion.set_locale(german, "de")
    args: dict[str, Any] = {
        "template": "english/outbid",
        "template_data": MONEY,
        "channels": ["email", "in_app"],
        "auction_id": uuid.uuid4(),
        "action_url": "https://auctions.example.com/a/3",
        "action_label": "Bid again",
        "metadata": {"lot": 3},
    }
    one = clarion.notify(german, idempotency_key="single", **args).notification_id
    (many,) = clarion.notify_many([{"user_id": german, "idempotency_key": "bulk"}], **args)
    skip = {"notification_id", "idempotency_key", "created_at", "updated_at"}
    with clean_db.connect() as conn:
        rows = {
            r["notification_id"]: r
            for r in conn.execute(
                sa.text(
                    "SELECT *, tags IS NULL AS tags_null, rich_content IS NULL AS rich_null"
                    " FROM notifications"
                )
            ).mappings()
        }
    a, b = rows[one], rows[many]
    assert {k: v for k, v in a.items() if k not in skip} == {
        k: v for k, v in b.items() if k not in skip
    }
    assert a["locale"] == "de" and a["email_html"]


def test_a_refusal_past_the_first_copy_chunk_leaves_nothing(
    session: Session, settings: Settings, clean_db: Engine
) -> None:
    """Rows of the chunks already copied go too: the call is all or nothing."""
    common: dict[str, Any] = {
        "title": "Auction ended",
        "message": "It is over",
        "category": "auction",
        "channels": ["in_app"],
    }
    clarion.notify(uuid.uuid4(), idempotency_key="taken", **common)
    count = INSERT_BATCH + 500
    entries: list[dict[str, Any]] = [
        {"user_id": uuid.uuid4(), "idempotency_key": f"ended:7:{i}"} for i in range(count)
    ]
    bad = INSERT_BATCH + 200  # in the second chunk: the first one is in by then
    with pytest.raises(ValidationError) as caught:
        clarion.notify_many([*entries[:bad], {"user_id": "42"}, *entries[bad:]], **common)
    assert caught.value.field == f"entries[{bad}].user_id"
    entries[bad]["idempotency_key"] = "taken"
    with session.begin():
        with pytest.raises(ValidationError) as caught:
            clarion.notify_many(entries, session=session, **common)
        assert caught.value.field == f"entries[{bad}].idempotency_key"
        assert caught.value.problem == "is already used by a notification for another user"
    # The caller's transaction committed: none of the call's rows came with it.
    assert _count(clean_db) == 1
