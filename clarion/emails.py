"""Branded emails: the layout row around a rendered title and message.

An email is rendered once, when the notification is created (``notify``),
and stored on the row (``email_html``, ``email_text``): the worker sends
exactly what was rendered, and ``clarion inspect`` shows it.

* The layout (``email_layouts``, highest active version of
  ``CLARION_EMAIL_LAYOUT``) holds Jinja2 sources. They run in Jinja2's
  sandbox (a layout is a row an operator can edit, not code), with
  autoescaping on for the HTML and ``StrictUndefined`` (a misspelt variable
  fails instead of rendering empty). Every value reaches the HTML escaped;
  the message's paragraphs are built here from escaped text.
* The plain-text part is rendered from the same values by the layout's text
  source, not derived from the HTML. A template whose ``body_format`` is
  ``html`` is the one exception: its message is markup (values escaped by
  :func:`clarion.templating.render`), and its text part is that markup's text.
* The CSS is inlined into ``style`` attributes with css-inline (Gmail and
  Outlook drop ``<style>`` blocks), no remote stylesheet is fetched.
* The layout's own words (footer reason, link hint, unsubscribe) come from
  its ``strings`` for the reader's locale, by the same fallback chain as
  templates. Right-to-left locales get ``dir="rtl"``.
* The footer's unsubscribe link appears only when an URL is given.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping
from html.parser import HTMLParser

import css_inline
import jinja2
import sqlalchemy as sa
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape
from sqlalchemy.orm import Session

from clarion.core.errors import NotFoundError, TemplateError
from clarion.locales import fallback_chain, is_rtl
from clarion.templating import render
from models import EmailLayout

__all__ = ["Layout", "RenderedEmail", "html_to_text", "load_layout", "render_email"]

_LAYOUT_KEYS = ("reason_bid", "reason_auction", "reason_other", "link_hint", "action_default",
                "unsubscribe")  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class Layout:
    """One version of an email layout, as stored in ``email_layouts``."""

    name: str
    version: int
    html_template: str
    text_template: str
    css: str
    strings: Mapping[str, Mapping[str, str]]


@dataclasses.dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    html: str
    text: str
    layout_version: int


def load_layout(session: Session, name: str) -> Layout:
    """The highest active version of layout ``name``; :class:`NotFoundError` if none."""
    row = session.scalars(
        sa.select(EmailLayout)
        .where(EmailLayout.name == name, EmailLayout.is_active.is_(True))
        .order_by(EmailLayout.version.desc())
        .limit(1)
    ).one_or_none()
    if row is None:
        raise NotFoundError(f"email layout: no active layout {name!r}")
    return Layout(
        name=row.name,
        version=row.version,
        html_template=row.html_template,
        text_template=row.text_template,
        css=row.css,
        strings=row.strings,
    )


_HTML_ENV = SandboxedEnvironment(
    autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
)
_TEXT_ENV = SandboxedEnvironment(
    autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
)


@functools.lru_cache(maxsize=64)
def _compiled(source: str, *, as_html: bool) -> jinja2.Template:
    env = _HTML_ENV if as_html else _TEXT_ENV
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        kind = "html_template" if as_html else "text_template"
        raise TemplateError(f"email layout {kind}: line {exc.lineno}: {exc.message}") from None


@functools.lru_cache(maxsize=64)
def _inliner(css: str) -> css_inline.CSSInliner:
    return css_inline.CSSInliner(
        keep_style_tags=False, load_remote_stylesheets=False, extra_css=css or None
    )


def _strings(layout: Layout, locale: str, default: str) -> dict[str, str]:
    for tag in [*fallback_chain(locale, default), "en"]:
        found = layout.strings.get(tag)
        if found:
            missing = [k for k in _LAYOUT_KEYS if k not in found]
            if missing:
                raise TemplateError(
                    f"email layout {layout.name} v{layout.version}: strings[{tag!r}] "
                    f"lacks {missing[0]!r}"
                )
            return dict(found)
    raise TemplateError(
        f"email layout {layout.name} v{layout.version}: no strings for {locale!r} or {default!r}"
    )


def single_line(text: str) -> str:
    """``text`` on one line: every run of whitespace (newlines too) is one space."""
    return " ".join(text.split())


def _paragraphs(message: str) -> Markup:
    """Escaped paragraphs of plain text: blank lines split them, newlines become <br>."""
    blocks = [b for b in re.split(r"\n[ \t]*\n", message.strip()) if b.strip()]
    return Markup("\n").join(
        Markup('<p class="message">{}</p>').format(
            Markup("<br>\n").join(escape(line) for line in block.split("\n"))
        )
        for block in blocks
    )


def render_email(
    layout: Layout,
    *,
    locale: str,
    default_locale: str,
    title: str,
    message: str,
    body_format: str = "text",
    category: str,
    action_url: str | None,
    action_label: str | None,
    platform: str,
    logo_url: str | None = None,
    unsubscribe_url: str | None = None,
) -> RenderedEmail:
    """The subject, HTML (CSS inlined) and text of one email.

    ``title`` and ``message`` are the rendered notification; with
    ``body_format="html"`` the message is trusted markup whose values were
    escaped when it was rendered.
    """
    words = _strings(layout, locale, default_locale)
    reason_key = f"reason_{category}" if f"reason_{category}" in words else "reason_other"
    reason = render(words[reason_key], {"platform": platform})
    subject = single_line(title)
    if body_format == "html":
        # Trusted: the template's own markup with its values escaped by
        # clarion.templating.render(html=True) when the notification was created.
        body = Markup(message)  # noqa: S704
        text_message = html_to_text(message)
    else:
        body = _paragraphs(message)
        text_message = message.strip()
    values = {
        "lang": locale,
        "dir": "rtl" if is_rtl(locale) else "ltr",
        "title": subject,
        "platform": platform,
        "logo_url": logo_url,
        "action_url": action_url,
        "action_label": action_label or words["action_default"],
        "reason": reason,
        "unsubscribe_url": unsubscribe_url,
        "t": words,
    }
    try:
        raw_html = _compiled(layout.html_template, as_html=True).render(values, body=body)
        text = _compiled(layout.text_template, as_html=False).render(values, message=text_message)
    except jinja2.TemplateError as exc:
        raise TemplateError(f"email layout {layout.name} v{layout.version}: {exc}") from None
    inlined = _inliner(layout.css).inline(raw_html)
    return RenderedEmail(
        subject=subject,
        html=inlined,
        text=re.sub(r"\n{3,}", "\n\n", text).strip() + "\n",
        layout_version=layout.version,
    )


class _TextExtractor(HTMLParser):
    _BREAKS = frozenset({"br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "table", "ul"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._hrefs: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head"):
            self._skip += 1
        elif tag in self._BREAKS:
            self.parts.append("\n")
        if tag == "a":
            self._hrefs.append(dict(attrs).get("href"))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head"):
            self._skip = max(0, self._skip - 1)
        elif tag in self._BREAKS:
            self.parts.append("\n")
        elif tag == "a" and self._hrefs:
            href = self._hrefs.pop()
            if href and href.startswith(("http://", "https://")):
                self.parts.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """The readable text of an HTML fragment: tags dropped, entities decoded,
    block elements on lines of their own, link targets in parentheses."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
