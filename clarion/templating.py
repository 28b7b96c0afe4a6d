"""Notification templates: a small, safe subset of ``str.format`` syntax.

A template is text with ``{name}`` placeholders; ``{{`` and ``}}`` stand for
literal braces. :class:`string.Formatter` tokenizes the text, but the output is
built here, never by ``str.format``/``format_map``: a template is user data, and
``str.format`` would let it reach attributes (``{x.__class__}``), items
(``{x[0]}``), ``repr`` (``{x!r}``) and arbitrary ``__format__`` code
(``{x:>10}``). Only plain ASCII identifiers are accepted as placeholders.

Values are rendered by type, never through an arbitrary ``__str__``:

* ``str`` as is; ``int`` (not ``bool``), ``float``, :class:`decimal.Decimal`,
  :class:`uuid.UUID` as their canonical text;
* :class:`datetime.datetime` and :class:`datetime.date` with ``isoformat()``;
* anything else (``None``, ``bool``, dicts, lists, other objects) is refused
  with :class:`~clarion.core.errors.TemplateError` naming the variable.

``render(..., html=True)`` escapes the values (not the template text) with
:func:`html.escape` (``quote=True``).

The seed templates of the spec ("Notification Types by Auction Events") ship
as package data in ``clarion/templates/auction_events.json`` and are loaded,
validated, by :func:`load_seed_templates`.
"""

from __future__ import annotations

import datetime
import decimal
import functools
import html as html_module
import importlib.resources
import json
import re
import string
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from clarion.core.errors import MissingVariableError, TemplateError
from models.enums import Category, Channel, Priority

__all__ = [
    "AUCTION_TYPES",
    "BODY_FORMATS",
    "SeedTemplate",
    "load_seed_templates",
    "parse_placeholders",
    "parse_seed_templates",
    "render",
    "validate_template",
]

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# A compiled template: literal text (braces already unescaped) and, for each
# placeholder, its name; ``None`` where a token has no placeholder.
_Token = tuple[str, str | None]

AUCTION_TYPES: frozenset[str] = frozenset({"english", "penny", "system"})
BODY_FORMATS: frozenset[str] = frozenset({"text", "html"})

_SEED_PACKAGE = "clarion"
_SEED_FIELDS = (
    "auction_type",
    "event",
    "category",
    "title",
    "message",
    "priority",
    "channels",
    "body_format",
)


def _escape_literal(literal: str) -> str:
    return literal.replace("{", "{{").replace("}", "}}")


def _raw_placeholder(name: str, conversion: str | None, spec: str) -> str:
    conv = f"!{conversion}" if conversion is not None else ""
    fmt = f":{spec}" if spec else ""
    return "{" + name + conv + fmt + "}"


def _check_placeholder(name: str, conversion: str | None, spec: str) -> None:
    raw = _raw_placeholder(name, conversion, spec)
    if name == "":
        raise TemplateError(f"placeholder {raw!r}: empty (positional) placeholders are not allowed")
    if name.isdigit():
        raise TemplateError(f"placeholder {raw!r}: positional placeholders are not allowed")
    if "." in name:
        raise TemplateError(f"placeholder {raw!r}: attribute access is not allowed")
    if "[" in name or "]" in name:
        raise TemplateError(f"placeholder {raw!r}: indexing is not allowed")
    if not (_NAME_RE.fullmatch(name) and name.isidentifier()):
        raise TemplateError(
            f"placeholder {raw!r}: {name!r} is not a plain name ([A-Za-z_][A-Za-z0-9_]*)"
        )
    if conversion is not None:
        raise TemplateError(f"placeholder {raw!r}: conversions (!{conversion}) are not allowed")
    if spec:
        raise TemplateError(f"placeholder {raw!r}: format specs are not allowed")


@functools.lru_cache(maxsize=512)
def _compile(text: str) -> tuple[_Token, ...]:
    """Tokenize and validate ``text``; raise :class:`TemplateError` if it is bad."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TemplateError(f"malformed template: {exc}") from None

    tokens: list[_Token] = []
    pos = 0  # position in ``text`` of the current token
    for literal, name, spec, conversion in parsed:
        raw_literal = _escape_literal(literal)
        # Formatter.parse splits literal text at each ``{{``/``}}`` escape, so a
        # literal, re-escaped, is exactly the source text it came from.
        if not text.startswith(raw_literal, pos):  # pragma: no cover - parser invariant
            raise TemplateError(f"malformed template near offset {pos}")
        pos += len(raw_literal)
        if name is None:
            tokens.append((literal, None))
            continue
        _check_placeholder(name, conversion, spec or "")
        # ``{x:}`` parses like ``{x}`` (an empty format spec): look at the source.
        expected = "{" + name + "}"
        if not text.startswith(expected, pos):
            raise TemplateError(
                f"placeholder {{{name}:}} at offset {pos}: format specs are not allowed"
            )
        pos += len(expected)
        tokens.append((literal, name))
    if pos != len(text):  # pragma: no cover - parser invariant
        raise TemplateError(f"malformed template near offset {pos}")
    return tuple(tokens)


def validate_template(text: str) -> None:
    """Raise :class:`TemplateError` unless ``text`` is a well-formed template."""
    if not isinstance(text, str):
        raise TemplateError(f"a template must be a str, not {type(text).__name__}")
    _compile(text)


def parse_placeholders(text: str) -> list[str]:
    """The placeholder names of ``text``, each once, in order of first appearance.

    Raises :class:`TemplateError` if the template is malformed.
    """
    validate_template(text)
    names: dict[str, None] = {}
    for _literal, name in _compile(text):
        if name is not None:
            names.setdefault(name, None)
    return list(names)


def _value_text(name: str, value: object) -> str:
    """The text of one value, by type; never an arbitrary ``__str__``/``__format__``.

    Unbound base-class methods are called so subclasses cannot override them.
    """
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool) or value is None:
        raise TemplateError(
            f"template variable {name!r}: {value!r} cannot be rendered (bool and None "
            "are refused; pass a string)"
        )
    try:
        if isinstance(value, int):
            return int.__repr__(value)
        if isinstance(value, float):
            return float.__repr__(value)
    except ValueError as exc:  # ints beyond sys.get_int_max_str_digits()
        raise TemplateError(f"template variable {name!r}: {exc}") from None
    if isinstance(value, decimal.Decimal):
        return decimal.Decimal.__str__(value)
    if isinstance(value, uuid.UUID):
        return uuid.UUID.__str__(value)
    if isinstance(value, datetime.datetime):
        return datetime.datetime.isoformat(value)
    if isinstance(value, datetime.date):
        return datetime.date.isoformat(value)
    raise TemplateError(
        f"template variable {name!r}: values of type {type(value).__name__} cannot be "
        "rendered (use str, int, float, Decimal, UUID, date or datetime)"
    )


def render(text: str, data: Mapping[str, object], *, html: bool = False) -> str:
    """Render ``text`` with the values of ``data``.

    The whole template is validated first (:class:`TemplateError`); then the
    first placeholder, in order of appearance, without a value in ``data``
    raises :class:`MissingVariableError`. With ``html=True`` each value is
    HTML-escaped; the template's own text is left as written.
    """
    validate_template(text)
    parts: list[str] = []
    for literal, name in _compile(text):
        parts.append(literal)
        if name is None:
            continue
        if name not in data:
            raise MissingVariableError(name)
        value = _value_text(name, data[name])
        parts.append(html_module.escape(value, quote=True) if html else value)
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class SeedTemplate:
    """One notification template of the spec, validated."""

    auction_type: str
    event: str
    category: Category
    title: str
    message: str
    priority: Priority
    channels: tuple[Channel, ...]
    body_format: str

    @property
    def key(self) -> str:
        """``auction_type/event``, e.g. ``english/outbid``."""
        return f"{self.auction_type}/{self.event}"

    @property
    def placeholders(self) -> list[str]:
        """The placeholder names of the title then the message, each once."""
        names = dict.fromkeys(parse_placeholders(self.title))
        names.update(dict.fromkeys(parse_placeholders(self.message)))
        return list(names)

    def render(self, data: Mapping[str, object], *, html: bool = False) -> tuple[str, str]:
        """The rendered ``(title, message)``."""
        return render(self.title, data, html=html), render(self.message, data, html=html)


def _seed_from_entry(index: int, entry: object) -> SeedTemplate:
    if not isinstance(entry, dict):
        raise TemplateError(f"seed template #{index}: expected an object, not {entry!r}")
    auction_type = entry.get("auction_type")
    event = entry.get("event")
    key = f"{auction_type}/{event}" if auction_type or event else f"#{index}"

    def fail(field: str, problem: str) -> TemplateError:
        return TemplateError(f"seed template {key}: field {field!r}: {problem}")

    missing = [field for field in _SEED_FIELDS if field not in entry]
    if missing:
        raise fail(missing[0], "is missing")
    unknown = sorted(set(entry) - set(_SEED_FIELDS))
    if unknown:
        raise fail(unknown[0], "is not a known field")

    if auction_type not in AUCTION_TYPES:
        raise fail("auction_type", f"{auction_type!r} is not one of {sorted(AUCTION_TYPES)}")
    if not isinstance(event, str) or not _NAME_RE.fullmatch(event):
        raise fail("event", f"{event!r} is not a plain name")
    try:
        category = Category(entry["category"])
    except ValueError:
        raise fail("category", f"{entry['category']!r} is not a Category") from None
    try:
        priority = Priority(entry["priority"])
    except ValueError:
        raise fail("priority", f"{entry['priority']!r} is not a Priority") from None

    raw_channels = entry["channels"]
    if not isinstance(raw_channels, list) or not raw_channels:
        raise fail("channels", f"{raw_channels!r} is not a non-empty list")
    channels: list[Channel] = []
    for raw in raw_channels:
        try:
            channel = Channel(raw)
        except ValueError:
            raise fail("channels", f"{raw!r} is not a Channel") from None
        if channel in channels:
            raise fail("channels", f"{raw!r} is listed twice")
        channels.append(channel)

    body_format = entry["body_format"]
    if body_format not in BODY_FORMATS:
        raise fail("body_format", f"{body_format!r} is not one of {sorted(BODY_FORMATS)}")

    texts: dict[str, str] = {}
    for field in ("title", "message"):
        value = entry[field]
        if not isinstance(value, str) or not value.strip():
            raise fail(field, f"{value!r} is not a non-empty string")
        try:
            validate_template(value)
        except TemplateError as exc:
            raise fail(field, str(exc)) from None
        texts[field] = value

    return SeedTemplate(
        auction_type=str(auction_type),
        event=event,
        category=category,
        title=texts["title"],
        message=texts["message"],
        priority=priority,
        channels=tuple(channels),
        body_format=str(body_format),
    )


def parse_seed_templates(document: object) -> list[SeedTemplate]:
    """Validate a decoded seed-template document (a JSON list of objects).

    Raises :class:`TemplateError` naming the template (``auction_type/event``)
    and the field for a bad enum value, bad template syntax, a missing or
    unknown field, or a duplicated ``auction_type/event``.
    """
    if not isinstance(document, list):
        raise TemplateError("seed templates: expected a JSON list of objects")
    seeds: list[SeedTemplate] = []
    seen: set[str] = set()
    for index, entry in enumerate(document):
        seed = _seed_from_entry(index, entry)
        if seed.key in seen:
            raise TemplateError(f"seed template {seed.key}: defined twice")
        seen.add(seed.key)
        seeds.append(seed)
    return seeds


def load_seed_templates() -> list[SeedTemplate]:
    """The spec's notification templates, from ``clarion/templates/auction_events.json``."""
    resource = importlib.resources.files(_SEED_PACKAGE) / "templates" / "auction_events.json"
    try:
        document = json.loads(resource.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TemplateError(
            f"seed templates: cannot read templates/auction_events.json: {exc}"
        ) from exc
    return parse_seed_templates(document)
