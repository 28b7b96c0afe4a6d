"""Collapse follow-ups in the reader's language, with the branded email around them.

The delivery policy folds a burst of outbids into one follow-up and writes
its texts on the carrier's row inside the scheduler's claim
(``models.policy_state``). What the follow-up says must be rendered the way
``notify`` renders every notification: in the language of the carrier's
template row, typed values (money, numbers, dates) formatted for the reader
with Babel, and, when it goes by email, inside the email layout, since the
worker sends the stored email as is.

That rendering (Jinja2, Babel, css-inline, the layout row) lives here in the
top layer with ``notify``'s, so there is one way to render an email. The
scheduler's claim cannot import it; ``clarion scheduler`` (and the embedded
demo) build a :class:`FollowUps` and hand it down to
``scheduler.runtime.build_scheduler`` as the claim's
``models.policy_state.FollowUpRenderer``, the same kind of port as the
providers and the presence source.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import babel.numbers
import sqlalchemy as sa
from sqlalchemy.orm import Session

from clarion.core.errors import ClarionError
from clarion.core.settings import Settings
from clarion.emails import Layout, load_layout, render_email, single_line
from clarion.locales import format_value, formatting_locale
from models.notifications import UserLocale
from models.policy import render_collapsed
from models.policy_state import FollowUp, FollowUpText

__all__ = ["FollowUps", "localized_values"]


def localized_values(data: Mapping[str, Any] | None, locale: str) -> dict[str, Any]:
    """``data`` with every typed value written for ``locale``.

    A malformed typed value (notify refuses them; a row written by plain SQL
    may hold one) becomes its bare amount or value rather than raw JSON:
    the follow-up must go out regardless.
    """
    out: dict[str, Any] = {}
    for key, value in (data or {}).items():
        if isinstance(value, Mapping) and "type" in value:
            try:
                out[key] = format_value(value, locale)
            except ClarionError:
                out[key] = str(value.get("amount", value.get("value", "")))
        else:
            out[key] = value
    return out


class FollowUps:
    """The claim's follow-up renderer (``models.policy_state.FollowUpRenderer``)."""

    def __init__(self, settings: Settings) -> None:
        self.default_locale = settings.default_locale
        self.layout_name = settings.email_layout
        self.platform = settings.platform_name
        self.logo_url = settings.platform_logo_url

    def __call__(self, session: Session, items: Sequence[FollowUp]) -> list[FollowUpText]:
        layout: Layout | None = None
        if any(item.email for item in items):
            layout = load_layout(session, self.layout_name)
        readers = {
            user_id: locale
            for user_id, locale in session.execute(
                sa.select(UserLocale.user_id, UserLocale.locale).where(
                    UserLocale.user_id.in_({item.user_id for item in items})
                )
            )
        }
        return [self.render(item, readers.get(item.user_id), layout) for item in items]

    def render(self, item: FollowUp, reader: str | None, layout: Layout | None) -> FollowUpText:
        """One follow-up: ``reader`` is the user's stored locale, if any."""
        locale = item.locale or self.default_locale
        # As notify does: the reader's own locale formats the values when the
        # text is in their language (pt-BR reading pt), the text's otherwise.
        numbers = formatting_locale(reader or locale, locale)
        data = localized_values(item.data, numbers)

        def number(n: int) -> str:
            return str(babel.numbers.format_decimal(n, locale=numbers.replace("-", "_")))

        title = single_line(
            render_collapsed(item.collapse_title, item.title, data, item.count, number=number)
            if item.collapse_title
            else item.title
        )[:255]
        message = render_collapsed(
            item.collapse_message,
            item.message,
            data,
            item.count,
            html_body=item.html,
            number=number,
        )
        if not item.email or layout is None:
            return FollowUpText(title=title, message=message)
        email = render_email(
            layout,
            locale=locale,
            default_locale=self.default_locale,
            title=title,
            message=message,
            body_format="html" if item.html else "text",
            category=item.category,
            action_url=item.action_url,
            action_label=item.action_label,
            platform=self.platform,
            logo_url=self.logo_url,
        )
        return FollowUpText(
            title=title,
            message=message,
            email_html=email.html,
            email_text=email.text,
            email_layout_version=email.layout_version,
        )
