"""Locales and layouts on PostgreSQL: the user's locale picks the template, the
fallback chain, what a notification records, and the commands around them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import clarion
from clarion.core.errors import NotFoundError, ValidationError
from clarion.core.settings import Settings
from clarion.locales import get_locale, money, set_locale
from models import Notification

pytestmark = pytest.mark.postgres

SCRIPT = "<script>alert(1)</script>"


def clarion_cli(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clarion", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


@pytest.fixture
def restore_templates(engine: Engine, session: Session) -> Iterator[None]:
    """Undo a test's template edits: drop added rows, reactivate, restore texts.

    The test's session is rolled back first: its uncommitted rows would
    otherwise hold the locks the restore waits for.
    """
    with engine.connect() as conn:
        before = {
            r.template_id: r
            for r in conn.execute(
                sa.text("SELECT template_id, title, message, version FROM notification_templates")
            )
        }
    yield
    session.rollback()
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE notifications SET template_id = NULL"))
        conn.execute(
            sa.text("DELETE FROM notification_templates WHERE NOT (template_id = ANY(:ids))"),
            {"ids": list(before)},
        )
        for r in before.values():
            conn.execute(
                sa.text(
                    "UPDATE notification_templates SET is_active = true, title = :title,"
                    " message = :message, version = :version WHERE template_id = :template_id"
                ),
                r._asdict(),
            )


def _outbid(session: Session, user: uuid.UUID, **kwargs: object) -> Notification:
    return clarion.notify(
        user,
        template="english/outbid",
        template_data={"amount": money("1234.5", "EUR")},
        action_url="https://auctions.example.com/a/7",
        action_label="Bid again",
        session=session,
        **kwargs,  # type: ignore[arg-type]
    )


def test_migrations_ship_six_templates_in_six_locales_and_a_layout(engine: Engine) -> None:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT locale, count(*) FROM notification_templates GROUP BY locale")
        ).all()
        layout = conn.execute(sa.text("SELECT name, version, is_active FROM email_layouts")).one()
    assert dict(rows) == {loc: 6 for loc in ("en", "de", "es", "fr", "pt-BR", "ar")}
    assert tuple(layout) == ("default", 1, True)


def test_users_locale_picks_the_template_and_is_recorded(
    session: Session, settings: Settings
) -> None:
    user = uuid.uuid4()
    assert set_locale(user, "de", session=session) == "de"
    assert get_locale(user, session=session) == "de"
    row = _outbid(session, user)
    assert row.title == "Sie wurden überboten"
    assert row.message == "Jemand hat mehr als Ihr Gebot von 1.234,50\u00a0€ geboten"
    assert (row.locale, row.template_version, row.email_layout_version) == ("de", 1, 1)
    assert row.email_html is not None and row.email_text is not None
    assert '<html lang="de" dir="ltr">' in row.email_html
    assert "Bid again: https://auctions.example.com/a/7" in row.email_text
    assert "Sie erhalten diese E-Mail" in row.email_text
    # The data is stored typed, not as the German text.
    assert row.template_data == {"amount": {"type": "money", "amount": "1234.5", "currency": "EUR"}}

    # An explicit locale wins over the stored one; the locale can be replaced.
    arabic = _outbid(session, user, locale="ar")
    assert arabic.title == "تم تجاوز مزايدتك"
    assert arabic.email_html is not None and 'dir="rtl"' in arabic.email_html
    set_locale(user, "fr", session=session)
    assert get_locale(user, session=session) == "fr"
    assert _outbid(session, user).title == "Votre enchère a été dépassée"

    # No locale stored: the default.
    english = _outbid(session, uuid.uuid4())
    assert (english.title, english.locale) == ("You've been outbid", "en")
    assert english.message == "Someone bid higher than your €1,234.50 bid"


def test_fallback_chain_pt_br_then_pt_then_default(
    session: Session, settings: Settings, engine: Engine, restore_templates: None
) -> None:
    user = uuid.uuid4()
    set_locale(user, "pt_BR", session=session)
    assert get_locale(user, session=session) == "pt-BR"
    first = _outbid(session, user)
    assert (first.locale, first.title) == ("pt-BR", "Seu lance foi superado")
    # Brazilian reader: R$ style grouping even for euros.
    assert "1.234,50" in first.message
    session.commit()

    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE notification_templates SET is_active = false"
                " WHERE auction_type = 'english' AND event = 'outbid' AND locale = 'pt-BR'"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO notification_templates (template_id, auction_type, event, locale,"
                " category, title, message, priority, channels, body_format)"
                " SELECT gen_random_uuid(), auction_type, event, 'pt', category,"
                " 'Você foi superado', 'Alguém ofereceu mais que os seus {amount}', priority,"
                " channels, body_format FROM notification_templates"
                " WHERE auction_type = 'english' AND event = 'outbid' AND locale = 'en'"
            )
        )
    second = _outbid(session, user)
    assert (second.locale, second.title) == ("pt", "Você foi superado")
    # The pt text for a pt-BR reader is still formatted the Brazilian way.
    assert second.message == "Alguém ofereceu mais que os seus €\u00a01.234,50"
    session.commit()

    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE notification_templates SET is_active = false"
                " WHERE auction_type = 'english' AND event = 'outbid' AND locale = 'pt'"
            )
        )
    third = _outbid(session, user)
    assert (third.locale, third.title) == ("en", "You've been outbid")
    # English text: English formatting, not Portuguese numbers in English prose.
    assert third.message == "Someone bid higher than your €1,234.50 bid"
    session.commit()

    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE notification_templates SET is_active = false"
                " WHERE auction_type = 'english' AND event = 'outbid' AND locale = 'en'"
            )
        )
    with pytest.raises(NotFoundError, match="pt-BR, pt, en"):
        _outbid(session, user)


def test_editing_a_template_bumps_its_version(
    session: Session, settings: Settings, engine: Engine, restore_templates: None
) -> None:
    user = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE notification_templates SET message = 'Ihr Gebot von {amount} reicht nicht'"
                " WHERE auction_type = 'english' AND event = 'outbid' AND locale = 'de'"
            )
        )
        conn.execute(  # an unrelated change leaves the version alone
            sa.text(
                "UPDATE notification_templates SET is_active = true"
                " WHERE auction_type = 'english' AND event = 'outbid' AND locale = 'de'"
            )
        )
    row = _outbid(session, user, locale="de")
    assert (row.template_version, row.message) == (2, "Ihr Gebot von 1.234,50\u00a0€ reicht nicht")


def test_values_are_escaped_in_the_stored_email(session: Session, settings: Settings) -> None:
    row = clarion.notify(
        uuid.uuid4(),
        template="system/auction_ended",
        template_data={"auction_title": SCRIPT, "winner": "Tom & Jerry"},
        locale="es",
        session=session,
    )
    assert row.email_html is not None and row.email_text is not None
    assert "<script>" not in row.email_html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; ha finalizado" in row.email_html
    assert "Tom &amp; Jerry" in row.email_html
    assert f"{SCRIPT} ha finalizado. Ganador: Tom & Jerry" in row.email_text


def test_no_email_channel_stores_no_email(session: Session, settings: Settings) -> None:
    row = clarion.notify(
        uuid.uuid4(),
        template="penny/bid_placed",
        template_data={"auction_title": "Uhr", "extension_seconds": 15},
        locale="de",
        session=session,
    )
    assert row.message == "Ihr Gebot hat Uhr um 15 s verlängert"
    assert (row.email_html, row.email_text, row.email_layout_version) == (None, None, None)
    assert (row.locale, row.template_version) == ("de", 1)


def test_bad_locale_and_bad_typed_value_are_named(session: Session, settings: Settings) -> None:
    with pytest.raises(ValidationError) as caught:
        _outbid(session, uuid.uuid4(), locale="xx-nope")
    assert caught.value.field == "locale"
    with pytest.raises(ValidationError) as caught:
        set_locale(uuid.uuid4(), "klingon", session=session)
    assert caught.value.field == "locale"
    with pytest.raises(ValidationError) as caught:
        clarion.notify(
            uuid.uuid4(),
            template="english/outbid",
            template_data={"amount": {"type": "money", "amount": "5", "currency": "EURO"}},
            session=session,
        )
    assert caught.value.field == "template_data"
    assert "['amount']" in str(caught.value)


def test_cli_template_list_preview_locale_and_inspect(
    pg_url: str, clean_db: Engine, tmp_path: Path
) -> None:
    env = {"CLARION_DATABASE_URL": pg_url, "CLARION_PLATFORM_NAME": "Acme Auctions"}
    listed = clarion_cli("template", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "english/outbid" in listed.stdout
    assert "ar v1, de v1, en v1, es v1, fr v1, pt-BR v1" in listed.stdout
    as_json = [
        json.loads(line)
        for line in clarion_cli("template", "list", "--json", env=env).stdout.splitlines()
    ]
    assert len(as_json) == 36

    data = json.dumps({"amount": {"type": "money", "amount": "150", "currency": "EUR"}})
    out = tmp_path / "outbid-ar.html"
    preview = clarion_cli(
        "template", "preview", "english/outbid", "--locale", "ar", "--data", data,
        "--action-url", "https://auctions.example.com/a/7", "--out", str(out), env=env,
    )  # fmt: skip
    assert preview.returncode == 0, preview.stderr
    assert "subject:  تم تجاوز مزايدتك" in preview.stdout
    assert "150.00" in preview.stdout and "€" in preview.stdout
    assert "Acme Auctions" in preview.stdout
    written = out.read_text(encoding="utf-8")
    assert '<html lang="ar" dir="rtl">' in written
    assert "style=" in written and "<style" not in written

    default_out = clarion_cli(
        "template", "preview", "english/outbid", "--locale", "pt-PT", "--data", data,
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert default_out.returncode == 0, default_out.stderr
    assert "template: english/outbid en v1 (asked: pt-PT)" in default_out.stdout
    assert (tmp_path / "preview-english-outbid-en.html").exists()

    missing = clarion_cli("template", "preview", "english/outbid", "--locale", "de", env=env)
    assert missing.returncode == 2
    assert "amount" in missing.stderr and "Traceback" not in missing.stderr
    bad = clarion_cli("template", "preview", "english/outbid", "--data", "[1]", env=env)
    assert (bad.returncode, "--data" in bad.stderr) == (2, True)
    unknown = clarion_cli("template", "preview", "english/nothing", env=env)
    assert unknown.returncode == 6

    user = str(uuid.uuid4())
    assert (
        clarion_cli("locale", "show", user, env=env).stdout.strip() == f"{user} none (default en)"
    )
    stored = clarion_cli("locale", "set", user, "pt_br", env=env)
    assert (stored.returncode, stored.stdout.strip()) == (0, f"{user} pt-BR")
    assert clarion_cli("locale", "show", user, env=env).stdout.strip() == f"{user} pt-BR"
    refused = clarion_cli("locale", "set", user, "klingon", env=env)
    assert refused.returncode == 2 and "locale" in refused.stderr

    with Session(clean_db) as session, session.begin():
        note = clarion.notify(
            uuid.UUID(user),
            template="english/outbid",
            template_data={"amount": "150 €"},
            session=session,
        )
        note_id = str(note.notification_id)
    shown = clarion_cli("inspect", note_id, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    content = json.loads(shown.stdout)["content"]
    assert (content["locale"], content["template_version"], content["email_layout_version"]) == (
        "pt-BR",
        1,
        1,
    )
    assert content["template"] == "english/outbid"
    text = clarion_cli("inspect", note_id, env=env)
    assert "pt-BR" in text.stdout and "template_version" in text.stdout
