"""Email layouts and locales: templates per language, a user's locale, what was rendered.

Revision ID: 0004_email_layouts_locales
Revises: 0002
Create Date: 2026-12-02

* ``notification_templates`` gains ``locale`` (BCP 47, ``en`` for the rows
  0001 seeded) and ``version``; its key becomes ``(auction_type, event,
  locale)``. On PostgreSQL a trigger bumps ``version`` whenever the title,
  message or body format changes, so a notification's recorded version
  names the text it was rendered from.
* ``email_layouts``: the HTML and plain-text frames of an email (Jinja2
  sources), their CSS and their strings per locale; a new version is a new
  row, the highest active version of a name is the one used.
* ``user_locales``: one locale per user, beside ``user_addresses``.
* ``notifications`` records what it was rendered with (``locale``,
  ``template_version``, ``email_layout_version``) and, when it goes by email,
  the rendered ``email_html`` and ``email_text``.

Self-contained like 0001: the translations and the default layout are
literal data here, not read from live code.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_email_layouts_locales"
down_revision: str | None = "0003_web"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (auction_type, event, locale, title, message) for the six templates 0001
# seeded in English. pt (without region) is left out on purpose: pt-PT
# readers fall back to English rather than to Brazilian wording.
TRANSLATIONS: tuple[tuple[str, str, str, str, str], ...] = (
    # German
    ("english", "new_bid", "de", "Neues Gebot für {auction_title}",
     "{bidder} hat {amount} auf {item_title} geboten"),
    ("english", "outbid", "de", "Sie wurden überboten",
     "Jemand hat mehr als Ihr Gebot von {amount} geboten"),
    ("penny", "bid_placed", "de", "Gebot erfolgreich abgegeben",
     "Ihr Gebot hat {auction_title} um {extension_seconds} s verlängert"),
    ("penny", "auction_ending", "de", "Auktion endet bald!",
     "{auction_title} endet in {time_remaining}"),
    ("system", "auction_started", "de", "Auktion gestartet",
     "{auction_title} ist jetzt live"),
    ("system", "auction_ended", "de", "Auktion beendet",
     "{auction_title} ist beendet. Gewinner: {winner}"),
    # Spanish
    ("english", "new_bid", "es", "Nueva puja en {auction_title}",
     "{bidder} ha pujado {amount} por {item_title}"),
    ("english", "outbid", "es", "Han superado tu puja",
     "Alguien ha pujado más que tu puja de {amount}"),
    ("penny", "bid_placed", "es", "Puja realizada con éxito",
     "Tu puja ha prolongado {auction_title} {extension_seconds} s"),
    ("penny", "auction_ending", "es", "¡La subasta termina pronto!",
     "{auction_title} termina en {time_remaining}"),
    ("system", "auction_started", "es", "Subasta iniciada",
     "{auction_title} ya está en marcha"),
    ("system", "auction_ended", "es", "Subasta finalizada",
     "{auction_title} ha finalizado. Ganador: {winner}"),
    # French (narrow no-break space before ! and no-break space before :)
    ("english", "new_bid", "fr", "Nouvelle enchère sur {auction_title}",
     "{bidder} a enchéri {amount} sur {item_title}"),
    ("english", "outbid", "fr", "Votre enchère a été dépassée",
     "Quelqu\u2019un a enchéri au-delà de votre offre de {amount}"),
    ("penny", "bid_placed", "fr", "Enchère placée avec succès",
     "Votre enchère a prolongé {auction_title} de {extension_seconds} s"),
    ("penny", "auction_ending", "fr", "La vente se termine bientôt\u202f!",
     "{auction_title} se termine dans {time_remaining}"),
    ("system", "auction_started", "fr", "La vente a commencé",
     "{auction_title} est maintenant en direct"),
    ("system", "auction_ended", "fr", "Vente terminée",
     "{auction_title} est terminée. Gagnant\u00a0: {winner}"),
    # Portuguese (Brazil)
    ("english", "new_bid", "pt-BR", "Novo lance em {auction_title}",
     "{bidder} deu um lance de {amount} em {item_title}"),
    ("english", "outbid", "pt-BR", "Seu lance foi superado",
     "Alguém deu um lance maior que o seu de {amount}"),
    ("penny", "bid_placed", "pt-BR", "Lance registrado com sucesso",
     "Seu lance prorrogou {auction_title} em {extension_seconds} s"),
    ("penny", "auction_ending", "pt-BR", "O leilão está terminando!",
     "{auction_title} termina em {time_remaining}"),
    ("system", "auction_started", "pt-BR", "Leilão iniciado",
     "{auction_title} já está ao vivo"),
    ("system", "auction_ended", "pt-BR", "Leilão encerrado",
     "{auction_title} foi encerrado. Vencedor: {winner}"),
    # Arabic
    ("english", "new_bid", "ar", "مزايدة جديدة على {auction_title}",
     "قدّم {bidder} عرضًا بقيمة {amount} على {item_title}"),
    ("english", "outbid", "ar", "تم تجاوز مزايدتك",
     "قدّم شخص ما عرضًا أعلى من عرضك البالغ {amount}"),
    ("penny", "bid_placed", "ar", "تم تقديم مزايدتك بنجاح",
     "مدّدت مزايدتك {auction_title} بمقدار {extension_seconds} ثانية"),
    ("penny", "auction_ending", "ar", "المزاد على وشك الانتهاء!",
     "ينتهي {auction_title} خلال {time_remaining}"),
    ("system", "auction_started", "ar", "بدأ المزاد",
     "{auction_title} مباشر الآن"),
    ("system", "auction_ended", "ar", "انتهى المزاد",
     "انتهى {auction_title}. الفائز: {winner}"),
)  # fmt: skip

# The default layout. ``{{ body }}`` is the message already turned into
# escaped paragraphs; every other value is escaped by Jinja2's autoescape.
# Alignment is left to ``dir`` (no text-align: left), so RTL needs no second copy.
LAYOUT_HTML = """<!DOCTYPE html>
<html lang="{{ lang }}" dir="{{ dir }}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light">
<title>{{ title }}</title>
</head>
<body class="page">
<table role="presentation" class="wrapper" width="100%" cellpadding="0" cellspacing="0">
<tr><td class="outer" align="center">
<table role="presentation" class="card" width="600" cellpadding="0" cellspacing="0">
<tr><td class="header">
{%- if logo_url %}<img class="logo" src="{{ logo_url }}" alt="{{ platform }}" height="32">
{%- else %}<span class="brand">{{ platform }}</span>{% endif -%}
</td></tr>
<tr><td class="content">
<h1 class="title">{{ title }}</h1>
{{ body }}
{%- if action_url %}
<table role="presentation" class="button-row" cellpadding="0" cellspacing="0">
<tr><td class="button">
<a class="button-link" href="{{ action_url }}">{{ action_label }}</a>
</td></tr>
</table>
<p class="hint">{{ t.link_hint }}
<a class="hint-link" href="{{ action_url }}">{{ action_url }}</a></p>
{%- endif %}
</td></tr>
<tr><td class="footer">
<p class="reason">{{ reason }}</p>
{%- if unsubscribe_url %}
<p class="unsubscribe">
<a class="unsubscribe-link" href="{{ unsubscribe_url }}">{{ t.unsubscribe }}</a>
</p>
{%- endif %}
</td></tr>
</table>
</td></tr>
</table>
</body>
</html>
"""

LAYOUT_TEXT = """{{ platform }}

{{ title }}

{{ message }}
{% if action_url %}
{{ action_label }}: {{ action_url }}
{% endif %}
--
{{ reason }}
{% if unsubscribe_url %}{{ t.unsubscribe }}: {{ unsubscribe_url }}
{% endif %}"""

LAYOUT_CSS = """
.page { margin: 0; padding: 0; background-color: #f3f4f6; }
.wrapper { background-color: #f3f4f6; }
.outer { padding: 24px 12px; }
.card { max-width: 600px; background-color: #ffffff; border-radius: 8px;
  border: 1px solid #e5e7eb; }
.header { padding: 20px 32px; background-color: #1e3a8a; border-radius: 8px 8px 0 0; }
.brand { color: #ffffff; font-family: Arial, Helvetica, sans-serif; font-size: 20px;
  font-weight: bold; }
.logo { display: block; border: 0; }
.content { padding: 28px 32px 8px 32px; font-family: Arial, Helvetica, sans-serif;
  color: #111827; font-size: 16px; line-height: 24px; }
.title { margin: 0 0 16px 0; font-size: 22px; line-height: 30px; color: #111827; }
.message { margin: 0 0 16px 0; }
.button-row { margin: 8px 0 16px 0; }
.button { background-color: #dc2626; border-radius: 6px; }
.button-link { display: inline-block; padding: 12px 24px; color: #ffffff;
  font-family: Arial, Helvetica, sans-serif; font-size: 16px; font-weight: bold;
  text-decoration: none; }
.hint { margin: 0 0 16px 0; font-size: 13px; line-height: 20px; color: #6b7280; }
.hint-link { color: #1e3a8a; word-break: break-all; }
.footer { padding: 16px 32px 24px 32px; border-top: 1px solid #e5e7eb;
  font-family: Arial, Helvetica, sans-serif; font-size: 12px; line-height: 18px;
  color: #6b7280; }
.reason { margin: 0 0 8px 0; }
.unsubscribe { margin: 0; }
.unsubscribe-link { color: #6b7280; }
"""

# The layout's own words per locale. {platform} is the platform's name.
# reason_<category> explains why the mail came; reason_other covers the rest.
LAYOUT_STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "reason_bid": "You are receiving this email because you bid in an auction on {platform}.",
        "reason_auction": "You are receiving this email because you follow auctions on {platform}.",
        "reason_other": "You are receiving this email because you have an account on {platform}.",
        "link_hint": "Button not working? Open this link:",
        "action_default": "View",
        "unsubscribe": "Unsubscribe",
    },
    "de": {
        "reason_bid": "Sie erhalten diese E-Mail, weil Sie bei einer Auktion auf {platform} "
        "geboten haben.",
        "reason_auction": "Sie erhalten diese E-Mail, weil Sie Auktionen auf {platform} folgen.",
        "reason_other": "Sie erhalten diese E-Mail, weil Sie ein Konto bei {platform} haben.",
        "link_hint": "Die Schaltfläche funktioniert nicht? Öffnen Sie diesen Link:",
        "action_default": "Ansehen",
        "unsubscribe": "Abmelden",
    },
    "es": {
        "reason_bid": "Recibes este correo porque has pujado en una subasta de {platform}.",
        "reason_auction": "Recibes este correo porque sigues subastas en {platform}.",
        "reason_other": "Recibes este correo porque tienes una cuenta en {platform}.",
        "link_hint": "¿El botón no funciona? Abre este enlace:",
        "action_default": "Ver",
        "unsubscribe": "Darse de baja",
    },
    "fr": {
        "reason_bid": "Vous recevez cet e-mail parce que vous avez enchéri sur une vente "
        "de {platform}.",
        "reason_auction": "Vous recevez cet e-mail parce que vous suivez des ventes "
        "sur {platform}.",
        "reason_other": "Vous recevez cet e-mail parce que vous avez un compte sur {platform}.",
        "link_hint": "Le bouton ne fonctionne pas\u202f? Ouvrez ce lien\u00a0:",
        "action_default": "Voir",
        "unsubscribe": "Se désabonner",
    },
    "pt-BR": {
        "reason_bid": "Você está recebendo este e-mail porque deu um lance em um leilão "
        "no {platform}.",
        "reason_auction": "Você está recebendo este e-mail porque acompanha leilões no {platform}.",
        "reason_other": "Você está recebendo este e-mail porque tem uma conta no {platform}.",
        "link_hint": "O botão não funciona? Abra este link:",
        "action_default": "Ver",
        "unsubscribe": "Cancelar inscrição",
    },
    "ar": {
        "reason_bid": "تصلك هذه الرسالة لأنك شاركت بمزايدة في مزاد على {platform}.",
        "reason_auction": "تصلك هذه الرسالة لأنك تتابع المزادات على {platform}.",
        "reason_other": "تصلك هذه الرسالة لأن لديك حسابًا على {platform}.",
        "link_hint": "الزر لا يعمل؟ افتح هذا الرابط:",
        "action_default": "عرض",
        "unsubscribe": "إلغاء الاشتراك",
    },
}

_BUMP_FUNCTION = """
CREATE FUNCTION notification_templates_bump_version() RETURNS trigger AS $$
BEGIN
    IF (NEW.title, NEW.message, NEW.body_format)
            IS DISTINCT FROM (OLD.title, OLD.message, OLD.body_format)
            AND NEW.version = OLD.version THEN
        NEW.version := OLD.version + 1;
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    with op.batch_alter_table("notification_templates") as batch:
        batch.add_column(sa.Column("locale", sa.String(35), nullable=False, server_default="en"))
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
        batch.drop_constraint("uq_notification_templates_key", type_="unique")
        batch.create_unique_constraint(
            "uq_notification_templates_key", ["auction_type", "event", "locale"]
        )
    if postgres:
        op.execute(_BUMP_FUNCTION)
        op.execute(
            "CREATE TRIGGER notification_templates_bump_version BEFORE UPDATE"
            " ON notification_templates FOR EACH ROW"
            " EXECUTE FUNCTION notification_templates_bump_version()"
        )

    op.create_table(
        "email_layouts",
        sa.Column("layout_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("html_template", sa.Text(), nullable=False),
        sa.Column("text_template", sa.Text(), nullable=False),
        sa.Column("css", sa.Text(), nullable=False, server_default=""),
        sa.Column("strings", _json(postgres), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.current_timestamp(),
        ),
        sa.PrimaryKeyConstraint("layout_id", name=op.f("pk_email_layouts")),
        sa.UniqueConstraint("name", "version", name="uq_email_layouts_name_version"),
    )
    op.create_table(
        "user_locales",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("locale", sa.String(35), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.current_timestamp(),
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.current_timestamp(),
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_locales")),
    )
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("locale", sa.String(35), nullable=True))
        batch.add_column(sa.Column("template_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("email_layout_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("email_html", sa.Text(), nullable=True))
        batch.add_column(sa.Column("email_text", sa.Text(), nullable=True))

    _seed(postgres)


def _json(postgres: bool) -> sa.types.TypeEngine[object]:
    from sqlalchemy.dialects import postgresql

    return postgresql.JSONB() if postgres else sa.JSON()


def _seed(postgres: bool) -> None:
    bind = op.get_bind()
    now = dt.datetime.now(dt.UTC)
    english = {
        (row.auction_type, row.event): row
        for row in bind.execute(
            sa.text(
                "SELECT auction_type, event, category, priority, channels, body_format"
                " FROM notification_templates WHERE locale = 'en'"
            )
        )
    }
    rows = []
    for auction_type, event, locale, title, message in TRANSLATIONS:
        source = english.get((auction_type, event))
        if source is None:  # an operator removed the English template: nothing to translate
            continue
        channels = source.channels
        rows.append(
            {
                "template_id": uuid.uuid4(),
                "auction_type": auction_type,
                "event": event,
                "locale": locale,
                "category": source.category,
                "title": title,
                "message": message,
                "priority": source.priority,
                # jsonb comes back as a list; SQLite's JSON as its text.
                "channels": json.loads(channels) if isinstance(channels, str) else channels,
                "body_format": source.body_format,
                "created_at": now,
                "updated_at": now,
            }
        )
    if rows:
        cast = "CAST(:{0} AS notification_{0})" if postgres else ":{0}"
        channels_sql = "CAST(:channels AS jsonb)" if postgres else ":channels"
        conflict = " ON CONFLICT (auction_type, event, locale) DO NOTHING" if postgres else ""
        bind.execute(
            sa.text(
                "INSERT INTO notification_templates (template_id, auction_type, event, locale,"
                " category, title, message, priority, channels, body_format, version,"
                " created_at, updated_at) VALUES (:template_id, :auction_type, :event, :locale,"
                f" {cast.format('category')}, :title, :message, {cast.format('priority')},"
                f" {channels_sql}, :body_format, 1, :created_at, :updated_at){conflict}"
            ).bindparams(
                sa.bindparam("template_id", type_=sa.Uuid()),
                sa.bindparam("channels", type_=sa.JSON()),
                sa.bindparam("created_at", type_=sa.DateTime(timezone=True)),
                sa.bindparam("updated_at", type_=sa.DateTime(timezone=True)),
            ),
            rows,
        )
    layouts = sa.table(
        "email_layouts",
        sa.column("layout_id", sa.Uuid),
        sa.column("name", sa.String),
        sa.column("version", sa.Integer),
        sa.column("html_template", sa.Text),
        sa.column("text_template", sa.Text),
        sa.column("css", sa.Text),
        sa.column("strings", sa.JSON),
        sa.column("is_active", sa.Boolean),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    bind.execute(
        layouts.insert(),
        [
            {
                "layout_id": uuid.uuid4(),
                "name": "default",
                "version": 1,
                "html_template": LAYOUT_HTML,
                "text_template": LAYOUT_TEXT,
                "css": LAYOUT_CSS,
                "strings": LAYOUT_STRINGS,
                "is_active": True,
                "created_at": now,
            }
        ],
    )


def downgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("notifications") as batch:
        for column in ("email_text", "email_html", "email_layout_version", "template_version",
                       "locale"):  # fmt: skip
            batch.drop_column(column)
    op.drop_table("user_locales")
    op.drop_table("email_layouts")
    if bind.dialect.name == "postgresql":
        op.execute(
            "DROP TRIGGER IF EXISTS notification_templates_bump_version ON notification_templates"
        )
        op.execute("DROP FUNCTION IF EXISTS notification_templates_bump_version()")
    # Notifications rendered from a translation keep their text, not the link.
    op.execute(
        "UPDATE notifications SET template_id = NULL WHERE template_id IN"
        " (SELECT template_id FROM notification_templates WHERE locale <> 'en')"
    )
    op.execute("DELETE FROM notification_templates WHERE locale <> 'en'")
    with op.batch_alter_table("notification_templates") as batch:
        batch.drop_constraint("uq_notification_templates_key", type_="unique")
        batch.create_unique_constraint("uq_notification_templates_key", ["auction_type", "event"])
        batch.drop_column("version")
        batch.drop_column("locale")
