"""Collapse follow-ups in the reader's language, email included, at the claim (PostgreSQL).

The shipped ``english/outbid`` and ``english/new_bid`` (migrations 0004, 0005,
0009) are claimed by ``Claims`` with the renderer ``clarion scheduler`` hands
down (:class:`clarion.followups.FollowUps`). The end-to-end email through the
SES sandbox is in ``tests/pipeline/test_pipeline_followup_email.py``.
"""

from __future__ import annotations

import datetime as dt
import html
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from clarion import policy
from clarion.api import notify
from clarion.core.db import session_factory
from clarion.core.errors import NotFoundError, ValidationError
from clarion.core.settings import Settings
from clarion.followups import FollowUps, localized_values
from clarion.locales import money, set_locale
from models.claims import ClaimBatch, Claims
from models.enums import Channel
from models.notifications import Notification, NotificationTemplate
from models.policy import PolicyConfig

pytestmark = pytest.mark.postgres

UTC = dt.UTC
SHIPPED = ("en", "de", "es", "fr", "pt-BR", "ar")

#: locale -> (title, message) of the follow-up of three outbids, the last at 310 EUR.
OUTBID_3 = {
    "en": ("You've been outbid 3 times", "Outbid 3 times, current price €310.00"),
    "de": ("Sie wurden 3-mal überboten", "3-mal überboten, aktueller Preis 310,00\xa0€"),
    "es": ("Han superado tu puja 3 veces", "Puja superada 3 veces, precio actual 310,00\xa0€"),
    "fr": (
        "Votre enchère a été dépassée 3 fois",
        "Enchère dépassée 3 fois, prix actuel 310,00\xa0€",
    ),
    "pt-BR": ("Seu lance foi superado 3 vezes", "Lance superado 3 vezes, preço atual €\xa0310,00"),
    "ar": (
        "عدد مرات تجاوز مزايدتك: 3",
        "عدد مرات تجاوز مزايدتك: 3، السعر الحالي: \u200f310.00\xa0€",
    ),
}


@pytest.fixture
def db(clean_db: Engine, settings: Settings) -> Engine:
    return clean_db


def claims(engine: Engine, settings: Settings) -> Claims:
    return Claims(session_factory(engine), policy=PolicyConfig(), follow_ups=FollowUps(settings))


def claim(c: Claims, now: dt.datetime) -> ClaimBatch:
    return c.claim_due(
        batch_size=100,
        lease_seconds=600,
        queue_for=lambda ch, p: Channel(ch).value,
        make_message=lambda d, q: uuid.uuid4().hex,
        now=now,
    )


def outbid(engine: Engine, user: uuid.UUID, auction: uuid.UUID, amount: str) -> uuid.UUID:
    with sessionmaker(engine, expire_on_commit=False).begin() as s:
        return notify(
            user,
            template="english/outbid",
            template_data={"amount": money(amount, "EUR")},
            auction_id=auction,
            action_url="https://auctions.example/a/1",
            session=s,
        ).notification_id


def reader(engine: Engine, locale: str) -> uuid.UUID:
    user = uuid.uuid4()
    with sessionmaker(engine).begin() as s:
        set_locale(user, locale, session=s)
    return user


def row(engine: Engine, notification_id: uuid.UUID) -> Notification:
    with Session(engine, expire_on_commit=False) as s:
        return s.get_one(Notification, notification_id)


def test_every_shipped_locale_has_its_own_collapse_texts(db: Engine) -> None:
    with Session(db) as s:
        found = {
            (t.event, t.locale): (t.collapse_title, t.collapse_message)
            for t in s.scalars(
                sa.select(NotificationTemplate).where(
                    NotificationTemplate.auction_type == "english",
                    NotificationTemplate.event.in_(("outbid", "new_bid")),
                )
            )
        }
    for event in ("outbid", "new_bid"):
        english = found[(event, "en")]
        for locale in SHIPPED[1:]:
            title, message = found[(event, locale)]
            assert (title, message) != english, (event, locale)
            assert title != english[0] and message != english[1], (event, locale)
            assert "{count}" in title and "{count}" in message
            assert "{amount}" in message


@pytest.mark.parametrize("locale", SHIPPED)
def test_the_follow_up_and_its_email_speak_the_readers_language(
    db: Engine, settings: Settings, locale: str
) -> None:
    c = claims(db, settings)
    user, auction = reader(db, locale), uuid.uuid4()
    t0 = dt.datetime.now(UTC)
    first = outbid(db, user, auction, "300.00")
    claim(c, t0)
    carrier = outbid(db, user, auction, "305.00")
    claim(c, t0 + dt.timedelta(seconds=1))
    folded = outbid(db, user, auction, "310.00")
    claim(c, t0 + dt.timedelta(seconds=2))
    title, message = OUTBID_3[locale]
    got = row(db, carrier)
    assert (got.title, got.message) == (title, message)
    assert got.locale == locale
    # The email the worker will send is the follow-up's, in the layout.
    assert got.email_text is not None and got.email_html is not None
    assert message in got.email_text
    assert "current price" not in got.email_text or locale == "en"
    assert message in html.unescape(got.email_html)
    assert f'lang="{locale}"' in got.email_html
    assert ('dir="rtl"' in got.email_html) is (locale == "ar")
    for text in (got.title, got.message, got.email_text, got.email_html):
        assert '"type"' not in text and "{" not in text.replace("{{", "")
    # The first went as it was written; the folded one points at the carrier.
    assert "305" not in row(db, first).message
    assert row(db, folded).status == "cancelled"


def test_the_follow_up_email_follows_each_fold(db: Engine, settings: Settings) -> None:
    """Rewritten at every fold: the email carries the latest count and price."""
    c = claims(db, settings)
    user, auction = reader(db, "de"), uuid.uuid4()
    t0 = dt.datetime.now(UTC)
    for i, amount in enumerate(("100", "110", "120", "130")):
        last = outbid(db, user, auction, amount)
        claim(c, t0 + dt.timedelta(seconds=i))
        if i == 1:
            carrier = last
    got = row(db, carrier)
    assert got.message == "4-mal überboten, aktueller Preis 130,00\xa0€"
    assert got.email_text is not None and "4-mal überboten" in got.email_text
    assert got.email_html is not None and "130,00" in got.email_html
    assert "110,00" not in got.email_html


def test_a_follow_up_without_email_keeps_no_email(db: Engine, settings: Settings) -> None:
    c = claims(db, settings)
    user, auction = reader(db, "fr"), uuid.uuid4()
    t0 = dt.datetime.now(UTC)
    ids = []
    for i, amount in enumerate(("10", "11", "12")):
        with sessionmaker(db, expire_on_commit=False).begin() as s:
            ids.append(
                notify(
                    user,
                    template="english/outbid",
                    template_data={"amount": money(amount, "EUR")},
                    auction_id=auction,
                    channels=["in_app", "push"],
                    session=s,
                ).notification_id
            )
        claim(c, t0 + dt.timedelta(seconds=i))
    got = row(db, ids[1])
    assert got.message == "Enchère dépassée 3 fois, prix actuel 12,00\xa0€"
    assert got.email_html is None and got.email_text is None


def test_one_languages_follow_up_texts_are_set_alone(db: Engine) -> None:
    def texts() -> dict[str, tuple[str | None, str | None]]:
        with Session(db) as s:
            return {
                t.locale: (t.collapse_title, t.collapse_message)
                for t in s.scalars(
                    sa.select(NotificationTemplate).where(
                        NotificationTemplate.auction_type == "english",
                        NotificationTemplate.event == "outbid",
                    )
                )
            }

    before = texts()
    try:
        policy.set_template_policy(
            "english/outbid", collapse_title="Schon {count}-mal überboten", locale="de"
        )
        after = texts()
        assert after["de"] == ("Schon {count}-mal überboten", before["de"][1])
        assert {k: v for k, v in after.items() if k != "de"} == {
            k: v for k, v in before.items() if k != "de"
        }
        with pytest.raises(NotFoundError, match="no row in locale 'ja'"):
            policy.set_template_policy("english/outbid", collapse_title="x", locale="ja")
        with pytest.raises(ValidationError, match="locale"):
            policy.set_template_policy("english/outbid", collapse_title="x", locale="no such")
        assert texts() == after
    finally:
        title, message = before["de"]
        policy.set_template_policy(
            "english/outbid", collapse_title=title, collapse_message=message, locale="de"
        )


def test_typed_values_are_written_for_the_reader_never_as_json() -> None:
    data = {
        "amount": money("1234.5", "USD"),
        "when": {"type": "date", "value": "2026-12-24"},
        "bids": {"type": "number", "value": "12345"},
        "broken": {"type": "money", "amount": "x", "currency": "EUR"},
        "plain": "as is",
    }
    de = localized_values(data, "de")
    assert de == {
        "amount": "1.234,50\xa0$",
        "when": "24. Dezember 2026",
        "bids": "12.345",
        "broken": "x",
        "plain": "as is",
    }
    assert localized_values(data, "en")["amount"] == "$1,234.50"
