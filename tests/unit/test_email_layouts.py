"""Email layouts and locales without a database: the shipped data, rendered.

The shipped translations and the default layout are the literal data of
migration 0004 (loaded from its file, as the migration itself uses them);
the English templates are 0001's, the same as ``clarion/templates``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import html.parser
import importlib.util
import re
import zoneinfo
from pathlib import Path
from types import ModuleType

import pytest

from clarion.core.errors import MissingVariableError, ValidationError
from clarion.emails import Layout, RenderedEmail, html_to_text, render_email, single_line
from clarion.locales import (
    fallback_chain,
    format_value,
    formatting_locale,
    is_rtl,
    localize_data,
    money,
    normalize_locale,
    typed_json,
)
from clarion.templating import load_seed_templates, parse_placeholders, render

MIGRATION = (
    Path(__file__).resolve().parents[2]
    / "migrations"
    / "versions"
    / "0004_email_layouts_locales.py"
)
SHIPPED_LOCALES = ("en", "de", "es", "fr", "pt-BR", "ar")
SCRIPT = "<script>alert('x')</script>"


def _migration() -> ModuleType:
    spec = importlib.util.spec_from_file_location("migration_0004", MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


M = _migration()
LAYOUT = Layout(
    name="default",
    version=1,
    html_template=M.LAYOUT_HTML,
    text_template=M.LAYOUT_TEXT,
    css=M.LAYOUT_CSS,
    strings=M.LAYOUT_STRINGS,
)
ENGLISH = {seed.key: seed for seed in load_seed_templates()}
# (key, locale) -> (title, message, category)
SHIPPED: dict[tuple[str, str], tuple[str, str, str]] = {
    (key, "en"): (seed.title, seed.message, seed.category.value) for key, seed in ENGLISH.items()
}
for _type, _event, _locale, _title, _message in M.TRANSLATIONS:
    _key = f"{_type}/{_event}"
    SHIPPED[(_key, _locale)] = (_title, _message, ENGLISH[_key].category.value)


def email(
    title: str,
    message: str,
    *,
    locale: str = "en",
    category: str = "bid",
    action_url: str | None = "https://auctions.example.com/a/7",
    action_label: str | None = "Bid again",
    unsubscribe_url: str | None = None,
    body_format: str = "text",
    platform: str = "Acme Auctions",
) -> RenderedEmail:
    return render_email(
        LAYOUT,
        locale=locale,
        default_locale="en",
        title=title,
        message=message,
        body_format=body_format,
        category=category,
        action_url=action_url,
        action_label=action_label,
        platform=platform,
        unsubscribe_url=unsubscribe_url,
    )


class _Elements(html.parser.HTMLParser):
    """Every start tag of a document, with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def elements(document: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Elements()
    parser.feed(document)
    return parser.tags


# --- every shipped template in every shipped locale -----------------------------------


def test_every_template_ships_in_every_locale() -> None:
    assert {key for key, _ in SHIPPED} == set(ENGLISH)
    for key in ENGLISH:
        assert {loc for k, loc in SHIPPED if k == key} == set(SHIPPED_LOCALES), key
    assert set(M.LAYOUT_STRINGS) == set(SHIPPED_LOCALES)


@pytest.mark.parametrize("locale", SHIPPED_LOCALES)
@pytest.mark.parametrize("key", sorted(ENGLISH))
def test_template_renders_in_locale_with_no_missing_variable(key: str, locale: str) -> None:
    title, message, category = SHIPPED[(key, locale)]
    english = ENGLISH[key]
    # The same variables as the English original: data written for one
    # language renders in all of them.
    assert set(parse_placeholders(title)) | set(parse_placeholders(message)) == set(
        english.placeholders
    )
    data = {name: f"<{name}-value>" for name in english.placeholders}
    data["amount"] = {"type": "money", "amount": "1234.5", "currency": "EUR"}  # typed
    values = localize_data(data, locale)
    rendered_title = render(title, values)
    rendered_message = render(message, values)
    mail = email(rendered_title, rendered_message, locale=locale, category=category)

    for name in english.placeholders:
        if name == "amount":
            continue
        assert f"&lt;{name}-value&gt;" in mail.html  # escaped, present
        assert f"<{name}-value>" in mail.text  # verbatim
    if "amount" in english.placeholders:
        assert values["amount"] in mail.text
    assert "{" not in mail.text.replace("{{", "")
    assert mail.subject == single_line(rendered_title)
    assert f'lang="{locale}"' in mail.html
    # The footer's reason in the reader's language.
    reason_key = (
        f"reason_{category}"
        if f"reason_{category}" in M.LAYOUT_STRINGS[locale]
        else ("reason_other")
    )
    reason = M.LAYOUT_STRINGS[locale][reason_key].replace("{platform}", "Acme Auctions")
    assert reason in mail.text


def test_a_translation_missing_a_variable_fails_naming_it() -> None:
    """The check above can fail: a template without the data's variable raises."""
    with pytest.raises(MissingVariableError) as caught:
        render("{auction_title} endet in {time_remaining}", {"auction_title": "Uhr"})
    assert caught.value.name == "time_remaining"


# --- fallback chain and locale tags ---------------------------------------------------


def test_fallback_chain() -> None:
    assert fallback_chain("pt-BR", "en") == ["pt-BR", "pt", "en"]
    assert fallback_chain("zh-Hant-TW", "en") == ["zh-Hant-TW", "zh-Hant", "zh", "en"]
    assert fallback_chain("en-GB", "en") == ["en-GB", "en"]
    assert fallback_chain("de", "de") == ["de"]


@pytest.mark.parametrize(
    ("given", "tag"),
    [("pt-BR", "pt-BR"), ("pt_BR", "pt-BR"), ("pt-br", "pt-BR"), ("AR", "ar"), ("de", "de")],
)
def test_locale_tags_are_normalized(given: str, tag: str) -> None:
    assert normalize_locale(given) == tag


@pytest.mark.parametrize("bad", ["", "x", "xx-", "english", "de DE", "zz", 7, None, "a" * 40])
def test_bad_locale_is_a_validation_error_naming_the_field(bad: object) -> None:
    with pytest.raises(ValidationError) as caught:
        normalize_locale(bad)
    assert caught.value.field == "locale"


def test_formatting_locale_follows_the_reader_within_the_language() -> None:
    assert formatting_locale("pt-BR", "pt") == "pt-BR"
    assert formatting_locale("ja", "en") == "en"


# --- escaping -----------------------------------------------------------------------------


def test_script_in_every_value_is_inert_in_html_and_verbatim_in_text() -> None:
    title = render("New bid on {auction_title}", {"auction_title": SCRIPT})
    message = render("{bidder} bid\n\n{amount}", {"bidder": SCRIPT, "amount": SCRIPT})
    mail = email(
        title,
        message,
        action_url='https://auctions.example.com/a?x="><script>alert(1)</script>',
        action_label=SCRIPT,
        unsubscribe_url="https://auctions.example.com/u?<script>",
        platform=SCRIPT,
    )
    tags = [tag for tag, _ in elements(mail.html)]
    assert "script" not in tags
    # The URL stays one attribute value (HTML5 leaves < and > raw inside quotes).
    button = next(a for t, a in elements(mail.html) if t == "a" and a.get("class") == "button-link")
    assert button["href"] == 'https://auctions.example.com/a?x="><script>alert(1)</script>'
    assert mail.html.count("&lt;script&gt;") >= 5  # title (x2), bidder, amount, label, platform
    for tag, attrs in elements(mail.html):
        for name in attrs:
            assert not name.startswith("on"), (tag, name)  # no attribute broke out
    # The plain-text part carries the values as they were given.
    assert mail.text.count(SCRIPT) >= 5
    assert "&lt;" not in mail.text


def test_message_paragraphs_and_line_breaks() -> None:
    mail = email("t", "first line\nsecond line\n\nnext paragraph")
    assert "first line<br>\nsecond line</p>" in mail.html
    assert mail.html.count('<p class="message"') == 2
    assert "first line\nsecond line\n\nnext paragraph" in mail.text


def test_subject_is_single_line() -> None:
    mail = email("Lot 7\r\nBcc: victim@example.com", "m")
    assert mail.subject == "Lot 7 Bcc: victim@example.com"
    assert "\n" not in mail.subject and "\r" not in mail.subject


def test_html_body_format_gets_a_text_part_without_tags() -> None:
    markup = render(
        '<p>{auction_title} is <b>live</b></p><p><a href="https://x.example/a">Open</a></p>',
        {"auction_title": "Rare <coins> & stamps"},
        html=True,
    )
    mail = email("Live", markup, body_format="html")
    assert "<b>live</b>" in mail.html
    assert "Rare &lt;coins&gt; &amp; stamps" in mail.html
    assert "Rare <coins> & stamps is live" in mail.text
    assert "Open (https://x.example/a)" in mail.text
    assert "<p>" not in mail.text and "<b>" not in mail.text


def test_html_to_text_keeps_entities_decoded_once() -> None:
    assert html_to_text("<p>a &amp;lt; b</p>") == "a &lt; b"


# --- layout ------------------------------------------------------------------------------


def test_rtl_locale_gets_dir_rtl() -> None:
    assert is_rtl("ar") and not is_rtl("de")
    arabic = email(*SHIPPED[("english/outbid", "ar")][:2], locale="ar")
    german = email(*SHIPPED[("english/outbid", "de")][:2], locale="de")
    [(_, html_attrs)] = [(t, a) for t, a in elements(arabic.html) if t == "html"]
    assert html_attrs == {"lang": "ar", "dir": "rtl"}
    [(_, html_attrs)] = [(t, a) for t, a in elements(german.html) if t == "html"]
    assert html_attrs == {"lang": "de", "dir": "ltr"}


def test_css_is_inlined_and_the_button_links_to_the_action() -> None:
    mail = email("t", "m")
    assert "<style" not in mail.html
    links = [a for t, a in elements(mail.html) if t == "a"]
    button = next(a for a in links if a.get("class") == "button-link")
    assert button["href"] == "https://auctions.example.com/a/7"
    assert "background-color" in (next(
        a for t, a in elements(mail.html) if t == "td" and a.get("class") == "button"
    )["style"] or "")  # fmt: skip
    assert "Bid again: https://auctions.example.com/a/7" in mail.text


def test_no_button_without_action_url_and_default_label() -> None:
    mail = email("t", "m", action_url=None, action_label=None)
    assert 'class="button-link"' not in mail.html
    assert "https://" not in mail.text
    labelled = email("t", "m", action_label=None, locale="de")
    assert ">Ansehen</a>" in labelled.html


def test_unsubscribe_link_only_when_given() -> None:
    without = email("t", "m")
    assert "unsubscribe" not in without.html.lower().replace("unsubscribe-link", "")
    assert "Unsubscribe" not in without.text
    given = email("t", "m", unsubscribe_url="https://auctions.example.com/u/abc")
    link = next(
        a for t, a in elements(given.html) if t == "a" and a.get("class") == "unsubscribe-link"
    )
    assert link["href"] == "https://auctions.example.com/u/abc"
    assert "Unsubscribe: https://auctions.example.com/u/abc" in given.text


def test_layout_strings_fall_back_along_the_chain() -> None:
    # pt-PT has no strings of its own: pt is absent too, so English.
    mail = email("t", "m", locale="pt-PT")
    assert "You are receiving this email" in mail.text


# --- Babel formatting ---------------------------------------------------------------------

NBSP = "\u00a0"


def test_currency_in_two_locales() -> None:
    price = money(decimal.Decimal("1234.5"), "EUR")
    assert format_value(price, "en") == "€1,234.50"
    assert format_value(price, "de") == f"1.234,50{NBSP}€"
    assert format_value(money(99, "BRL"), "pt-BR") == f"R${NBSP}99,00"


def test_dates_in_two_locales() -> None:
    day = {"type": "date", "value": "2026-12-24"}
    assert format_value(day, "en") == "December 24, 2026"
    assert format_value(day, "de") == "24. Dezember 2026"
    moment = {"type": "datetime", "value": "2026-12-24T18:05:00Z", "timezone": "Europe/Berlin"}
    assert format_value(moment, "de") == "24. Dezember 2026, 19:05"
    assert format_value(moment, "en") == f"December 24, 2026, 7:05{chr(0x202F)}PM"
    utc = {"type": "datetime", "value": "2026-12-24T18:05:00+00:00"}
    assert format_value(utc, "de") == "24. Dezember 2026, 18:05 UTC"


def test_numbers() -> None:
    assert format_value({"type": "number", "value": 1234.5}, "de") == "1.234,5"
    assert format_value({"type": "number", "value": "1234.5"}, "en") == "1,234.5"


def test_python_values_become_typed_json() -> None:
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    data = typed_json(
        {
            "ends": dt.datetime(2026, 12, 24, 19, 5, tzinfo=berlin),
            "day": dt.date(2026, 12, 24),
            "bid": decimal.Decimal("10.50"),
            "plain": "x",
        }
    )
    assert data == {
        "ends": {"type": "datetime", "value": "2026-12-24T18:05:00Z", "timezone": "Europe/Berlin"},
        "day": {"type": "date", "value": "2026-12-24"},
        "bid": {"type": "number", "value": "10.50"},
        "plain": "x",
    }
    with pytest.raises(ValidationError, match="timezone-aware"):
        typed_json({"ends": dt.datetime(2026, 12, 24)})


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"type": "money", "amount": "1", "currency": "XYZ"}, "unknown currency"),
        ({"type": "money", "amount": "abc", "currency": "EUR"}, "amount 'abc' is not valid"),
        ({"type": "money", "amount": "NaN", "currency": "EUR"}, "not a finite number"),
        ({"type": "money", "amount": "1"}, "needs 'currency'"),
        ({"type": "date", "value": "24.12.2026"}, "value '24.12.2026' is not valid"),
        ({"type": "datetime", "value": "2026-12-24T18:05:00"}, "has no UTC offset"),
        (
            {"type": "datetime", "value": "2026-12-24T18:05:00Z", "timezone": "Mars/Base"},
            "unknown time zone",
        ),
        ({"type": "colour", "value": "red"}, "is not one of money, number, date, datetime"),
        ({"type": "number", "value": 1, "extra": 2}, "has no field 'extra'"),
    ],
)
def test_bad_typed_value_names_template_data_and_key(
    value: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        localize_data({"amount": value}, "de")
    assert caught.value.field == "template_data"
    assert "['amount']" in str(caught.value)
    assert problem in str(caught.value)


def test_no_unrendered_placeholder_survives_in_any_shipped_text() -> None:
    for (key, locale), (title, message, _) in SHIPPED.items():
        for text in (title, message):
            assert re.fullmatch(r"[^{}]*(\{[a-z_]+\}[^{}]*)*", text), (key, locale, text)


def test_logo_replaces_the_name_in_the_header() -> None:
    mail = render_email(
        LAYOUT,
        locale="en",
        default_locale="en",
        title="t",
        message="m",
        category="bid",
        action_url=None,
        action_label=None,
        platform="Acme <Auctions>",
        logo_url="https://cdn.example.com/logo.png?a=1&b=2",
    )
    [img] = [a for t, a in elements(mail.html) if t == "img"]
    assert (img["src"], img["alt"]) == (
        "https://cdn.example.com/logo.png?a=1&b=2",
        "Acme <Auctions>",
    )
    assert 'class="brand"' not in mail.html
    assert "Acme <Auctions>" in mail.text
