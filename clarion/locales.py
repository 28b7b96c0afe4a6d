"""Locales: a user's language, the template fallback chain, values formatted with Babel.

A locale is a BCP 47 tag (``en``, ``de``, ``pt-BR``, ``zh-Hant-TW``) that
Babel knows; ``pt_BR`` and ``pt-br`` are accepted and written ``pt-BR``.

**Fallback.** A template is looked up for the user's locale, then for each
shorter tag (``pt-BR`` -> ``pt``), then for ``CLARION_DEFAULT_LOCALE``
(:func:`fallback_chain`).

**Typed values.** ``template_data`` is JSON; a value that should be formatted
for the reader is passed as an object with a ``type``:

=============================================================  =========================
``{"type": "money", "amount": "150.00", "currency": "EUR"}``    ``150,00 €`` (de)
``{"type": "number", "value": 1234.5}``                         ``1.234,5`` (de)
``{"type": "date", "value": "2026-12-24"}``                     ``24. Dezember 2026`` (de)
``{"type": "datetime", "value": "2026-12-24T18:05:00Z",``      ``24. Dezember 2026, 19:05``
``"timezone": "Europe/Berlin"}``                                (without ``timezone``: UTC,
                                                                marked ``UTC``)
=============================================================  =========================

:func:`money` builds the first; :class:`~decimal.Decimal`, :class:`~datetime.date`
and aware :class:`~datetime.datetime` values given to ``notify`` are turned
into the others (:func:`typed_json`). Everything else is rendered as before.

**A user's locale** lives in ``user_locales`` (one row per user, beside the
addresses): :func:`set_locale`, :func:`get_locale`.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import re
import uuid
import zoneinfo
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import babel
import babel.dates
import babel.numbers
from sqlalchemy.orm import Session

from clarion.core.db import get_engine, session_factory
from clarion.core.errors import ValidationError
from clarion.core.parse import as_uuid, shown
from clarion.core.settings import get_settings
from models import locales as rows

__all__ = [
    "LOCALE_MAX",
    "fallback_chain",
    "format_value",
    "get_locale",
    "is_rtl",
    "localize_data",
    "money",
    "normalize_locale",
    "set_locale",
    "typed_json",
]

LOCALE_MAX = 35
_TAG = re.compile(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8}){0,3}")
TYPES = ("money", "number", "date", "datetime")

T = TypeVar("T")


@functools.lru_cache(maxsize=256)
def _parse(tag: str) -> babel.Locale:
    return babel.Locale.parse(tag.replace("-", "_"))


def _tag_of(locale: babel.Locale) -> str:
    return "-".join(p for p in (locale.language, locale.script, locale.territory) if p)


def normalize_locale(value: object, field: str = "locale") -> str:
    """``value`` as a BCP 47 tag Babel knows (``pt_br`` -> ``pt-BR``).

    Raises :class:`ValidationError` naming ``field`` otherwise.
    """
    if not isinstance(value, str):
        raise ValidationError(
            field, f"expected a locale such as 'de' or 'pt-BR', got {shown(value)}"
        )
    if len(value) > LOCALE_MAX or not _TAG.fullmatch(value):
        raise ValidationError(field, f"{shown(value)} is not a locale tag such as 'de' or 'pt-BR'")
    try:
        return _tag_of(_parse(value))
    except (ValueError, babel.UnknownLocaleError):
        raise ValidationError(field, f"unknown locale {value!r}") from None


def fallback_chain(locale: str, default: str) -> list[str]:
    """Where to look, in order: ``pt-BR`` -> ``pt-BR``, ``pt``, then ``default``."""
    parts = locale.split("-")
    chain = ["-".join(parts[:n]) for n in range(len(parts), 0, -1)]
    if default not in chain:
        chain.append(default)
    return chain


def is_rtl(locale: str) -> bool:
    """True for a right-to-left script (Arabic, Hebrew, Persian, Urdu, ...)."""
    return bool(_parse(locale).character_order == "right-to-left")


def formatting_locale(requested: str, rendered: str) -> str:
    """The locale numbers and dates are formatted in.

    The reader's own locale when the template is in its language (a pt-BR
    reader of the ``pt`` text still gets ``R$`` and day-month order); the
    template's otherwise (a Japanese reader of the English fallback gets
    English dates inside English sentences).
    """
    return requested if requested.split("-")[0] == rendered.split("-")[0] else rendered


# --- typed values ------------------------------------------------------------------


def money(amount: decimal.Decimal | int | str, currency: str) -> dict[str, str]:
    """A money value for ``template_data``: formatted in the reader's locale."""
    return {"type": "money", "amount": str(amount), "currency": currency}


def typed_json(value: object) -> object:
    """``value`` with Decimal, date and aware datetime values turned into typed objects.

    Leaves everything else alone (the JSON checks that follow refuse what
    JSON cannot hold). A naive datetime is refused: its moment is unknown.
    """
    if isinstance(value, Mapping):
        return {k: typed_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [typed_json(v) for v in value]
    if isinstance(value, decimal.Decimal):
        return {"type": "number", "value": str(value)}
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValidationError("template_data", "a datetime must be timezone-aware")
        key = getattr(value.tzinfo, "key", None)
        typed: dict[str, str] = {
            "type": "datetime",
            "value": value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        }
        if key:
            typed["timezone"] = key
        return typed
    if isinstance(value, dt.date):
        return {"type": "date", "value": value.isoformat()}
    return value


def _is_typed(value: object) -> bool:
    return isinstance(value, Mapping) and "type" in value


def localize_data(data: Mapping[str, Any], locale: str) -> dict[str, Any]:
    """``data`` with every typed value replaced by its text in ``locale``.

    Raises :class:`ValidationError` naming ``template_data`` and the key for
    a malformed typed value.
    """
    return {
        key: format_value(value, locale, where=f"template_data: at [{key!r}]")
        if _is_typed(value)
        else value
        for key, value in data.items()
    }


def format_value(value: Mapping[str, Any], locale: str, *, where: str = "value") -> str:
    """The text of one typed value in ``locale`` (see the module docstring)."""
    loc = _parse(locale)
    kind = value.get("type")

    def bad(problem: str) -> ValidationError:
        field, _, place = where.partition(": ")
        return ValidationError(field, f"{place + ': ' if place else ''}{problem}")

    def field(name: str, parse: Callable[[Any], T]) -> T:
        if name not in value:
            raise bad(f"a {kind} value needs {name!r}")
        try:
            return parse(value[name])
        except (ValueError, TypeError, ArithmeticError, KeyError) as exc:
            raise bad(f"{name} {shown(value[name])} is not valid: {exc}") from None

    allowed = {
        "money": {"type", "amount", "currency"},
        "number": {"type", "value"},
        "date": {"type", "value"},
        "datetime": {"type", "value", "timezone"},
    }
    if kind not in allowed:
        raise bad(f"type {shown(kind)} is not one of {', '.join(TYPES)}")
    unknown = sorted(set(value) - allowed[kind])
    if unknown:
        raise bad(f"a {kind} value has no field {unknown[0]!r}")
    if kind == "money":
        amount = field("amount", _decimal)
        currency = field("currency", _currency)
        return str(babel.numbers.format_currency(amount, currency, locale=loc))
    if kind == "number":
        return str(babel.numbers.format_decimal(field("value", _decimal), locale=loc))
    if kind == "date":
        day = field("value", _date)
        return str(babel.dates.format_date(day, "long", locale=loc))
    moment = field("value", _datetime)
    zone = field("timezone", _zone) if "timezone" in value else None
    local = moment.astimezone(zone or dt.UTC)
    pattern = str(babel.dates.get_datetime_format("long", locale=loc)).replace("'", "")
    text = pattern.replace("{0}", str(babel.dates.format_time(local, "short", locale=loc)))
    text = text.replace("{1}", str(babel.dates.format_date(local.date(), "long", locale=loc)))
    return text if zone is not None else f"{text} UTC"


def _decimal(raw: object) -> decimal.Decimal:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ValueError("expected a number or a decimal string")
    number = decimal.Decimal(str(raw))
    if not number.is_finite():
        raise ValueError("not a finite number")
    return number


def _currency(raw: object) -> str:
    if not isinstance(raw, str) or not re.fullmatch(r"[A-Z]{3}", raw):
        raise ValueError("expected an ISO 4217 code such as EUR")
    if raw not in babel.numbers.list_currencies():
        raise ValueError("unknown currency")
    return raw


def _date(raw: object) -> dt.date:
    if not isinstance(raw, str):
        raise ValueError("expected YYYY-MM-DD")
    return dt.date.fromisoformat(raw)


def _datetime(raw: object) -> dt.datetime:
    if not isinstance(raw, str):
        raise ValueError("expected an ISO 8601 time with an offset")
    moment = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("has no UTC offset")
    return moment


def _zone(raw: object) -> zoneinfo.ZoneInfo:
    if not isinstance(raw, str):
        raise ValueError("expected an IANA time zone such as Europe/Berlin")
    try:
        return zoneinfo.ZoneInfo(raw)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError("unknown time zone") from None


# --- a user's locale -----------------------------------------------------------------


def _in_session(session: Session | None, work: Callable[[Session], T]) -> T:
    if session is not None:
        return work(session)
    engine = get_engine(get_settings().effective_database_url)
    with session_factory(engine)() as own, own.begin():
        return work(own)


def set_locale(user_id: uuid.UUID | str, locale: str, *, session: Session | None = None) -> str:
    """Store ``user_id``'s locale (replacing any); returns it normalized (``pt-BR``).

    Joins the caller's transaction with ``session``; commits its own otherwise.
    """
    user = as_uuid(user_id, "user_id")
    tag = normalize_locale(locale)
    return _in_session(session, lambda s: rows.set_locale(s, user, tag))


def get_locale(user_id: uuid.UUID | str, *, session: Session | None = None) -> str | None:
    """``user_id``'s stored locale, or ``None`` when they have none."""
    user = as_uuid(user_id, "user_id")
    return _in_session(session, lambda s: rows.get_locale(s, user))
