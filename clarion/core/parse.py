"""Small parsers of input values, each raising :class:`ValidationError` naming the field.

The public API, the event outbox, the scheduler (rows written with plain SQL)
and the gateway's protocol all take ids, enum values and lists of them from
outside; they read them here, so that one value is accepted or refused the
same way everywhere.

Text and JSON that will be stored are checked here too (:func:`check_text`,
:func:`as_text`, :func:`as_json`): PostgreSQL refuses NUL characters in text
and in JSONB, and lone surrogates in any UTF-8 text, with a ``DataError``
that names neither the argument nor the place; these checks name both.
"""

from __future__ import annotations

import enum
import json
import math
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from clarion.core.errors import ValidationError

E = TypeVar("E", bound=enum.Enum)

#: Nesting deeper than this is refused: no real payload needs it, and walking
#: (or serialising) an unbounded nesting would end in a RecursionError.
JSON_MAX_DEPTH = 32
#: Integers inside JSON are at most this many bits (about 300 digits).
JSON_MAX_INT_BITS = 1024
#: How much of a bad value an error message quotes.
_SHOWN = 60


def shown(value: object) -> str:
    """A short ``repr`` of ``value`` for an error message (a huge value is cut)."""
    try:
        text = repr(value)
    except Exception:  # an object whose __repr__ fails must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text)} characters)"


def text_problem(value: str) -> str | None:
    """Why PostgreSQL could not store ``value`` as UTF-8 text, or None if it can."""
    nul = value.find("\x00")
    if nul >= 0:
        return f"contains a NUL character (U+0000) at offset {nul}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"contains a lone surrogate (U+{ord(value[exc.start]):04X}) at offset {exc.start}"
    return None


def check_text(value: str, field: str, where: str = "") -> None:
    """Raise :class:`ValidationError` if ``value`` holds what PostgreSQL cannot store."""
    problem = text_problem(value)
    if problem is not None:
        raise ValidationError(field, f"{where}{' ' if where else ''}{problem}".strip())


def as_text(value: object, field: str, *, limit: int | None, allow_blank: bool = False) -> str:
    """``value`` as storable text of at most ``limit`` characters (non-blank unless allowed)."""
    if not isinstance(value, str):
        raise ValidationError(field, f"expected a string, got {type(value).__name__}")
    if not allow_blank and not value.strip():
        raise ValidationError(field, "must not be empty")
    if limit is not None and len(value) > limit:
        raise ValidationError(field, f"is {len(value)} characters long; the limit is {limit}")
    check_text(value, field)
    return value


def as_json(value: object, field: str, *, limit: int) -> Any:
    """``value`` if it is JSON PostgreSQL can store, at most ``limit`` bytes serialised.

    Objects (mappings with string keys), lists and tuples, strings, finite
    numbers, booleans and None; strings and keys without NUL or lone
    surrogates; at most :data:`JSON_MAX_DEPTH` levels. The error names the
    place inside the value as a path (``at ["items"][2]``). The size is that
    of the compact UTF-8 serialisation, as the row and the providers see it.
    Returns the value with mappings as dicts and tuples as lists.
    """
    plain = _walk(value, field, "", 0)
    size = len(json.dumps(plain, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > limit:
        raise ValidationError(field, f"is {size} bytes as JSON; the limit is {limit}")
    return plain


def _walk(value: object, field: str, path: str, depth: int) -> Any:
    where = f"at {path or '(top)'}:"
    if depth > JSON_MAX_DEPTH:
        raise ValidationError(field, f"{where} nested deeper than {JSON_MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        check_text(value, field, where)
        return value
    if isinstance(value, int):
        # json.dumps refuses ints past sys.get_int_max_str_digits() with a ValueError.
        if value.bit_length() > JSON_MAX_INT_BITS:
            raise ValidationError(
                field, f"{where} a number of {value.bit_length()} bits is too large"
            )
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(field, f"{where} {value!r} is not a JSON number")
        return value
    if isinstance(value, Mapping):
        plain: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(
                    field, f"{where} keys must be strings, got {type(key).__name__}"
                )
            check_text(key, field, f"{where} key {shown(key)}")
            plain[key] = _walk(item, field, f"{path}[{json.dumps(key)[:_SHOWN]}]", depth + 1)
        return plain
    if isinstance(value, list | tuple):
        return [_walk(item, field, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    raise ValidationError(field, f"{where} values of type {type(value).__name__} are not JSON")


def as_uuid(value: object, field: str) -> uuid.UUID:
    """``value`` as a UUID (a UUID or its string form)."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise ValidationError(field, f"must be a UUID, got {shown(value)}")


def as_optional_uuid(value: object, field: str) -> uuid.UUID | None:
    return None if value is None else as_uuid(value, field)


def allowed_values(enum_class: type[enum.Enum]) -> str:
    return ", ".join(str(m.value) for m in enum_class)


def as_enum(enum_class: type[E], value: object, field: str) -> E:
    """``value`` as a member of ``enum_class`` (a member or its value)."""
    try:
        return enum_class(value)
    except ValueError:
        raise ValidationError(
            field, f"unknown value {shown(value)}; expected one of {allowed_values(enum_class)}"
        ) from None


def as_enum_list(enum_class: type[E], value: object, field: str) -> list[E]:
    """A non-empty list of members, first occurrence kept, order kept.

    A string is refused even though it is iterable: ``"email"`` is not
    ``["email"]``, and reading it letter by letter would name a confusing value.
    """
    if value is None or isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValidationError(field, f"expected a non-empty list, got {shown(value)}")
    chosen: list[E] = []
    for item in value:
        member = as_enum(enum_class, item, field)
        if member not in chosen:
            chosen.append(member)
    if not chosen:
        raise ValidationError(field, "expected a non-empty list, got an empty one")
    return chosen
