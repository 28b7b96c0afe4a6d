"""The stored email HTML in headless Chromium: German (left to right) and Arabic
(right to left), laid out as a mail client would show them; the screenshots are
the README's (docs/screenshots/email-*.png)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest
from browserkit import screenshot_dir
from sqlalchemy.orm import Session

import clarion
from clarion.core.settings import Settings
from clarion.locales import money

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.postgres

ACTION = "https://auctions.example.com/a/123"


def _email(
    session: Session, locale: str, template: str, data: dict[str, Any], *, label: str
) -> str:
    row = clarion.notify(
        uuid.uuid4(),
        template=template,
        template_data=data,
        channels=["email"],
        locale=locale,
        action_url=ACTION,
        action_label=label,
        session=session,
    )
    assert row.email_html is not None
    return row.email_html


def _layout(browser: Browser, markup: str, name: str) -> dict[str, Any]:
    page = browser.new_page(viewport={"width": 680, "height": 600})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    try:
        page.set_content(markup, wait_until="load")
        facts: dict[str, Any] = page.evaluate(
            """() => {
                const card = document.querySelector('table.card').getBoundingClientRect();
                const button = document.querySelector('a.button-link').getBoundingClientRect();
                const title = document.querySelector('h1.title');
                return {
                    dir: document.documentElement.dir,
                    direction: getComputedStyle(title).direction,
                    cardLeft: card.left, cardRight: card.right,
                    buttonLeft: button.left, buttonRight: button.right,
                    buttonHeight: button.height,
                    buttonColor: getComputedStyle(
                        document.querySelector('td.button')).backgroundColor,
                    title: title.innerText,
                    scripts: document.scripts.length,
                };
            }"""
        )
        page.screenshot(path=str(screenshot_dir() / name), full_page=True)
    finally:
        page.close()
    facts["requests"] = [u for u in requests if not u.startswith(("about:", "data:"))]
    return facts


def test_german_and_arabic_emails_in_chromium(
    chromium: Browser, session: Session, settings: Settings
) -> None:
    german = _email(
        session, "de", "english/outbid", {"amount": money("1250", "EUR")}, label="Erneut bieten"
    )
    arabic = _email(
        session,
        "ar",
        "system/auction_ended",
        {"auction_title": "مجموعة ساعات عتيقة", "winner": "Alice"},
        label="عرض المزاد",
    )

    de = _layout(chromium, german, "email-outbid-de.png")
    ar = _layout(chromium, arabic, "email-auction-ended-ar.png")

    assert (de["dir"], de["direction"]) == ("ltr", "ltr")
    assert (ar["dir"], ar["direction"]) == ("rtl", "rtl")
    assert de["title"] == "Sie wurden überboten"
    assert ar["title"] == "انتهى المزاد"
    # The button is drawn (inlined CSS applied) on the reading side of the card.
    for facts in (de, ar):
        assert facts["buttonHeight"] > 30
        assert facts["buttonColor"] == "rgb(220, 38, 38)"
        assert facts["scripts"] == 0
        assert facts["requests"] == []  # nothing fetched: no remote CSS, no tracking
    middle_de = (de["cardLeft"] + de["cardRight"]) / 2
    middle_ar = (ar["cardLeft"] + ar["cardRight"]) / 2
    assert de["buttonRight"] < middle_de  # left-aligned in German
    assert ar["buttonLeft"] > middle_ar  # right-aligned in Arabic
    for name in ("email-outbid-de.png", "email-auction-ended-ar.png"):
        assert (screenshot_dir() / name).stat().st_size > 10_000
