"""Collapse follow-ups in each shipped language.

Revision ID: 0009_policy_locales
Revises: 0008_receipts_suppression
Create Date: 2026-12-02

0005 made ``english/outbid`` and ``english/new_bid`` collapsible and wrote
the English follow-up texts on every locale row of them. Each shipped
locale (de, es, fr, pt-BR, ar) now gets its own. Only texts still equal to
0005's English ones are replaced (and, going down, only texts still equal to
these translations are put back), so that texts an operator set are kept.

The follow-ups are always about two or more events, so the plural is fixed
except in Arabic, whose wording names the count without inflecting a noun by
it. Self-contained: the texts are literal data here, not read from live code.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_policy_locales"
down_revision: str | None = "0008_receipts_suppression"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: What 0005 wrote on every row: (event) -> (collapse_title, collapse_message).
ENGLISH = {
    "outbid": (
        "You've been outbid {count} times",
        "Outbid {count} times, current price {amount}",
    ),
    "new_bid": (
        "{count} new bids on {auction_title}",
        "{count} bids; latest: {bidder} bid {amount} on {item_title}",
    ),
}

#: (event, locale) -> (collapse_title, collapse_message), all of auction type "english".
TRANSLATED: dict[tuple[str, str], tuple[str, str]] = {
    ("outbid", "de"): (
        "Sie wurden {count}-mal überboten",
        "{count}-mal überboten, aktueller Preis {amount}",
    ),
    ("new_bid", "de"): (
        "{count} neue Gebote für {auction_title}",
        "{count} Gebote; zuletzt hat {bidder} {amount} auf {item_title} geboten",
    ),
    ("outbid", "es"): (
        "Han superado tu puja {count} veces",
        "Puja superada {count} veces, precio actual {amount}",
    ),
    ("new_bid", "es"): (
        "{count} pujas nuevas en {auction_title}",
        "{count} pujas; la última: {bidder} ha pujado {amount} por {item_title}",
    ),
    ("outbid", "fr"): (
        "Votre enchère a été dépassée {count} fois",
        "Enchère dépassée {count} fois, prix actuel {amount}",
    ),
    ("new_bid", "fr"): (
        "{count} nouvelles enchères sur {auction_title}",
        "{count} enchères\u202f; la dernière\u202f: {bidder} a enchéri {amount} sur {item_title}",
    ),
    ("outbid", "pt-BR"): (
        "Seu lance foi superado {count} vezes",
        "Lance superado {count} vezes, preço atual {amount}",
    ),
    ("new_bid", "pt-BR"): (
        "{count} novos lances em {auction_title}",
        "{count} lances; o último: {bidder} deu um lance de {amount} em {item_title}",
    ),
    ("outbid", "ar"): (
        "عدد مرات تجاوز مزايدتك: {count}",
        "عدد مرات تجاوز مزايدتك: {count}، السعر الحالي: {amount}",
    ),
    ("new_bid", "ar"): (
        "مزايدات جديدة على {auction_title}: {count}",
        "عدد المزايدات: {count}؛ آخرها: قدّم {bidder} عرضًا بقيمة {amount} على {item_title}",
    ),
}

_TEMPLATES = sa.table(
    "notification_templates",
    sa.column("auction_type", sa.String),
    sa.column("event", sa.String),
    sa.column("locale", sa.String),
    sa.column("collapse_title", sa.String),
    sa.column("collapse_message", sa.Text),
)


def _swap(event: str, locale: str, old: tuple[str, str], new: tuple[str, str]) -> None:
    t = _TEMPLATES
    for column, before, after in (
        (t.c.collapse_title, old[0], new[0]),
        (t.c.collapse_message, old[1], new[1]),
    ):
        op.execute(
            t.update()
            .where(
                t.c.auction_type == "english",
                t.c.event == event,
                t.c.locale == locale,
                column == before,
            )
            .values({column.name: after})
        )


def upgrade() -> None:
    for (event, locale), texts in TRANSLATED.items():
        _swap(event, locale, ENGLISH[event], texts)


def downgrade() -> None:
    for (event, locale), texts in TRANSLATED.items():
        _swap(event, locale, texts, ENGLISH[event])
