"""A folded follow-up by email, end to end: the shipped ``english/outbid`` for a German
and an Arabic reader, real scheduler and worker processes, the SES sandbox. The
follow-up's mail, parsed with the standard library, carries the folded text
("outbid 4 times, current price ...") in the reader's language and formatting,
in the layout, in both alternatives; the first mail is the single outbid."""

from __future__ import annotations

import base64
import html
import uuid
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any

import pytest
from pipekit import Pipeline, StackFactory, User
from sqlalchemy.orm import Session

from clarion.api import notify
from clarion.locales import money, set_locale

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(300)]

WINDOW = 4  # seconds (CLARION_POLICY_COLLAPSE_WINDOW: the shipped template sets none)


def outbids(pl: Pipeline, user: User, locale: str, amounts: list[str]) -> list[uuid.UUID]:
    auction = uuid.uuid4()
    with Session(pl.engine) as s, s.begin():
        set_locale(user.user_id, locale, session=s)
    ids = []
    for amount in amounts:
        with pl.sessions.begin() as s:
            ids.append(
                notify(
                    user.user_id,
                    template="english/outbid",
                    template_data={"amount": money(amount, "EUR")},
                    auction_id=auction,
                    channels=["email"],
                    action_url="https://auctions.example.com/a/9",
                    session=s,
                ).notification_id
            )
    return ids


def mail_of(pl: Pipeline, notification_id: uuid.UUID) -> tuple[str, str, str]:
    """(subject, text, html) of the one mail sent for ``notification_id``."""
    [request] = pl.ses_requests(notification_id)
    raw = base64.b64decode(request.json()["Content"]["Raw"]["Data"])
    mail = BytesParser(policy=default_policy).parsebytes(raw)
    assert isinstance(mail, EmailMessage)
    assert mail.get_content_type() == "multipart/alternative"
    text, markup = (str(p.get_content()) for p in mail.iter_parts())
    return str(mail["Subject"]), text, markup


@pytest.mark.parametrize(
    ("locale", "subject", "first", "folded"),
    [
        (
            "de",
            "Sie wurden 4-mal überboten",
            "Jemand hat mehr als Ihr Gebot von 300,00\xa0€ geboten",
            "4-mal überboten, aktueller Preis 330,00\xa0€",
        ),
        (
            "ar",
            "عدد مرات تجاوز مزايدتك: 4",
            "قدّم شخص ما عرضًا أعلى من عرضك البالغ \u200f300.00\xa0€",
            "عدد مرات تجاوز مزايدتك: 4، السعر الحالي: \u200f330.00\xa0€",
        ),
    ],
)
def test_the_follow_up_mail_carries_the_folded_text_in_the_readers_language(
    stacks: StackFactory, pl: Pipeline, locale: str, subject: str, first: str, folded: str
) -> None:
    stacks("followup", CLARION_POLICY_COLLAPSE_WINDOW=str(WINDOW)).start()
    user = pl.user(email=True)
    ids = outbids(pl, user, locale, ["300.00", "310.00", "320.00", "330.00"])

    def sent(i: uuid.UUID) -> Any:
        found = pl.deliveries(i)
        return found if found and found["email"].status in {"sent", "cancelled"} else None

    for i in ids:
        pl.wait_until(lambda i=i: sent(i), timeout=WINDOW + 30, what="emails to end")
    went = [i for i in ids if pl.deliveries(i)["email"].status == "sent"]
    assert went == ids[:2], [pl.deliveries(i)["email"].status for i in ids]

    _, text, markup = mail_of(pl, ids[0])
    assert first in text and first in html.unescape(markup)
    got_subject, text, markup = mail_of(pl, ids[1])
    assert got_subject == subject
    assert folded in text
    assert folded in html.unescape(markup)
    assert first not in text and first not in html.unescape(markup)
    assert ('dir="rtl"' in markup) is (locale == "ar")
    assert "https://auctions.example.com/a/9" in markup  # the layout's button
    for part in (text, markup):
        assert '"type"' not in part and "&quot;type&quot;" not in part
