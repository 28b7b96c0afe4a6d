"""Branded emails end to end: notify() in the reader's locale, real scheduler and
worker processes, the SES sandbox (Raw MIME) and an SMTP server; the mail as sent
is parsed with the standard library's email parser."""

from __future__ import annotations

import base64
import html.parser
import uuid
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any

import pytest
from sqlalchemy.orm import Session

from channels.sandboxes.smtp import SMTPSandbox
from clarion.locales import money, set_locale

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(300)]

ACTION = "https://auctions.example.com/a/7?ref=mail&lot=3"
SCRIPT = "<script>alert(1)</script>"


class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(markup: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(markup)
    return parser.tags


def _notify(pl: Any, user: Any, locale: str, template: str, data: dict[str, Any]) -> uuid.UUID:
    with Session(pl.engine) as session, session.begin():
        set_locale(user.user_id, locale, session=session)
    return pl.notify(  # type: ignore[no-any-return]
        user,
        ["email"],
        template=template,
        template_data=data,
        title=None,
        message=None,
        category=None,
        action_url=ACTION,
        action_label=None,
    )


def _parts(mail: EmailMessage) -> tuple[str, str]:
    """The text and HTML alternatives of a multipart/alternative mail."""
    assert mail.get_content_type() == "multipart/alternative"
    parts = list(mail.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    text, markup = (str(p.get_content()) for p in parts)
    return text, markup


def test_german_email_through_ses_is_multipart_alternative(stacks: Any, pl: Any) -> None:
    stacks("ses").start()
    user = pl.user(email=True)
    nid = _notify(pl, user, "de", "english/outbid", {"amount": money("1234.5", "EUR")})
    notification, rows = pl.wait_final(nid, 1, timeout=30)
    assert rows["email"].status == "sent", rows["email"].last_error
    assert (notification.locale, notification.template_version) == ("de", 1)

    [request] = pl.ses_requests(nid)
    payload = request.json()
    assert set(payload["Content"]) == {"Raw"}
    raw = base64.b64decode(payload["Content"]["Raw"]["Data"])
    mail = BytesParser(policy=default_policy).parsebytes(raw)
    assert isinstance(mail, EmailMessage)
    assert mail["Subject"] == "Sie wurden überboten"
    assert mail["To"] == user.email
    assert mail["X-Clarion-Notification-Id"] == str(nid)
    text, markup = _parts(mail)

    # A real text part: the message, the link, the footer; no markup.
    assert "Jemand hat mehr als Ihr Gebot von 1.234,50\u00a0€ geboten" in text
    assert f"Ansehen: {ACTION}" in text
    assert "Sie erhalten diese E-Mail, weil Sie bei einer Auktion" in text
    assert "<" not in text
    # The layout's HTML, CSS inlined, the button pointing at the action.
    tags = _tags(markup)
    [(_, root)] = [(t, a) for t, a in tags if t == "html"]
    assert root == {"lang": "de", "dir": "ltr"}
    [button] = [a for t, a in tags if t == "a" and a.get("class") == "button-link"]
    assert button["href"] == ACTION
    assert "background-color" in str(button.get("style")) or any(
        t == "td" and a.get("class") == "button" and "background-color" in str(a.get("style"))
        for t, a in tags
    )
    assert "<style" not in markup
    assert "1.234,50" in markup and "Sie wurden überboten" in markup
    # No unsubscribe link: one-click unsubscribe does not exist yet.
    assert not any(a.get("class") == "unsubscribe-link" for _, a in tags)


def test_arabic_email_through_smtp_is_rtl_and_escaped(
    stacks: Any, pl: Any, pipeline_env: dict[str, str]
) -> None:
    with SMTPSandbox() as smtp:
        stack = stacks(
            "smtp",
            CLARION_EMAIL_PROVIDER="smtp",
            CLARION_SMTP_HOST=smtp.host,
            CLARION_SMTP_PORT=str(smtp.port),
        )
        stack.start()
        user = pl.user(email=True)
        nid = _notify(
            pl,
            user,
            "ar",
            "system/auction_ended",
            {"auction_title": SCRIPT, "winner": "Tom & Jerry"},
        )
        _, rows = pl.wait_final(nid, 1, timeout=30)
        assert rows["email"].status == "sent", rows["email"].last_error
        [received] = [m for m in smtp.messages if user.email in m.rcpt_tos]

    mail = BytesParser(policy=default_policy).parsebytes(received.raw)
    assert isinstance(mail, EmailMessage)
    assert mail["Subject"] == "انتهى المزاد"
    text, markup = _parts(mail)
    # Verbatim in text, inert in HTML.
    assert f"انتهى {SCRIPT}. الفائز: Tom & Jerry" in text
    assert "script" not in [t for t, _ in _tags(markup)]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markup
    assert "Tom &amp; Jerry" in markup
    [(_, root)] = [(t, a) for t, a in _tags(markup) if t == "html"]
    assert root == {"lang": "ar", "dir": "rtl"}
    assert "تصلك هذه الرسالة" in text
