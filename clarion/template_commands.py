"""``clarion template list|preview`` and ``clarion locale set|show``.

``preview`` renders a template exactly as :func:`clarion.notify` would for
a reader of ``--locale`` (the same fallback chain, the same Babel
formatting, the same layout) without writing anything: it prints the
subject and the text part and writes the HTML to a file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from clarion.core.db import get_engine, session_factory
from clarion.core.errors import TemplateError, ValidationError
from clarion.core.settings import Settings, get_settings
from clarion.exitcodes import ExitCode


def add_parsers(sub: Any) -> None:
    """Add ``template`` and ``locale`` to clarion's subcommands."""
    template = sub.add_parser("template", help="list templates, preview an email")
    template_sub = template.add_subparsers(dest="template_command", required=True, metavar="ACTION")
    listing = template_sub.add_parser("list", help="templates with their locales and versions")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    preview = template_sub.add_parser(
        "preview", help="print subject and text of a template's email, write its HTML"
    )
    preview.add_argument("template", help="auction_type/event, e.g. english/outbid")
    preview.add_argument("--locale", help="the reader's locale (default: CLARION_DEFAULT_LOCALE)")
    preview.add_argument("--data", default="{}", help="template_data as a JSON object")
    preview.add_argument("--action-url", help="the button's URL")
    preview.add_argument("--action-label", help="the button's label")
    preview.add_argument("--unsubscribe-url", help="the footer's unsubscribe link")
    preview.add_argument(
        "--out", type=Path, help="where to write the HTML (default: preview-TYPE-EVENT-LOCALE.html)"
    )
    template.set_defaults(func=cmd_template)

    locale = sub.add_parser("locale", help="set or show a user's locale")
    locale_sub = locale.add_subparsers(dest="locale_command", required=True, metavar="ACTION")
    set_ = locale_sub.add_parser("set", help="store a user's locale (BCP 47: de, pt-BR, ar)")
    set_.add_argument("user_id")
    set_.add_argument("locale")
    show = locale_sub.add_parser("show", help="a user's stored locale")
    show.add_argument("user_id")
    locale.set_defaults(func=cmd_locale)


def _settings() -> Settings:
    return get_settings()


def cmd_locale(args: argparse.Namespace) -> int:
    from clarion import locales

    _settings()
    if args.locale_command == "set":
        stored = locales.set_locale(args.user_id, args.locale)
        print(f"{args.user_id} {stored}")
        return ExitCode.OK
    found = locales.get_locale(args.user_id)
    default = _settings().default_locale
    print(f"{args.user_id} {found}" if found else f"{args.user_id} none (default {default})")
    return ExitCode.OK


def cmd_template(args: argparse.Namespace) -> int:
    settings = _settings()
    engine = get_engine(settings.effective_database_url)
    if args.template_command == "list":
        return _list(engine, as_json=args.json)
    return _preview(engine, settings, args)


def _list(engine: sa.Engine, *, as_json: bool) -> int:
    from models import NotificationTemplate

    with session_factory(engine)() as session:
        rows = session.execute(
            sa.select(
                NotificationTemplate.auction_type,
                NotificationTemplate.event,
                NotificationTemplate.locale,
                NotificationTemplate.version,
                NotificationTemplate.is_active,
                NotificationTemplate.body_format,
            ).order_by(
                NotificationTemplate.auction_type,
                NotificationTemplate.event,
                NotificationTemplate.locale,
            )
        ).all()
    if as_json:
        for r in rows:
            print(
                json.dumps(
                    {
                        "template": f"{r.auction_type}/{r.event}",
                        "locale": r.locale,
                        "version": r.version,
                        "active": r.is_active,
                        "body_format": r.body_format,
                    }
                )
            )
        return ExitCode.OK
    grouped: dict[str, list[str]] = {}
    for r in rows:
        mark = "" if r.is_active else " (inactive)"
        grouped.setdefault(f"{r.auction_type}/{r.event}", []).append(
            f"{r.locale} v{r.version}{mark}"
        )
    width = max((len(k) for k in grouped), default=0)
    for key, versions in grouped.items():
        print(f"{key:<{width}}  {', '.join(versions)}")
    if not grouped:
        print("no templates")
    return ExitCode.OK


def _preview(engine: sa.Engine, settings: Settings, args: argparse.Namespace) -> int:
    from clarion.api import load_template
    from clarion.emails import load_layout, render_email, single_line
    from clarion.locales import (
        fallback_chain,
        formatting_locale,
        localize_data,
        normalize_locale,
        typed_json,
    )
    from clarion.templating import render

    try:
        data = json.loads(args.data)
    except json.JSONDecodeError as exc:
        raise ValidationError("--data", f"is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValidationError("--data", "must be a JSON object of names to values")
    wanted = normalize_locale(args.locale, "--locale") if args.locale else settings.default_locale
    with session_factory(engine)() as session:
        tmpl = load_template(
            session, args.template, fallback_chain(wanted, settings.default_locale)
        )
        layout = load_layout(session, settings.email_layout)
    typed = typed_json(data)
    assert isinstance(typed, dict)
    values = localize_data(typed, formatting_locale(wanted, tmpl.locale))
    html_body = tmpl.body_format == "html"
    try:
        title = single_line(render(tmpl.title, values))
        message = render(tmpl.message, values, html=html_body)
    except TemplateError as exc:
        print(f"clarion: template {tmpl.key} ({tmpl.locale}): {exc}", file=sys.stderr)
        return ExitCode.USAGE
    email = render_email(
        layout,
        locale=tmpl.locale,
        default_locale=settings.default_locale,
        title=title,
        message=message,
        body_format=tmpl.body_format,
        category=str(tmpl.category.value),
        action_url=args.action_url,
        action_label=args.action_label,
        platform=settings.platform_name,
        logo_url=settings.platform_logo_url,
        unsubscribe_url=args.unsubscribe_url,
    )
    out: Path = args.out or Path(f"preview-{tmpl.auction_type}-{tmpl.event}-{tmpl.locale}.html")
    out.write_text(email.html, encoding="utf-8")
    print(f"template: {tmpl.key} {tmpl.locale} v{tmpl.version} (asked: {wanted})")
    print(f"layout:   {layout.name} v{layout.version}")
    print(f"subject:  {email.subject}")
    print(f"html:     {out}")
    print()
    print(email.text, end="")
    return ExitCode.OK
