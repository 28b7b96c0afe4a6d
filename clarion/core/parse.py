"""Small parsers of input values, each raising :class:`ValidationError` naming the field.

The public API, the event outbox, the scheduler (rows written with plain SQL)
and the gateway's protocol all take ids, enum values and lists of them from
outside; they read them here, so that one value is accepted or refused the
same way everywhere.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from typing import TypeVar

from clarion.core.errors import ValidationError

E = TypeVar("E", bound=enum.Enum)


def as_uuid(value: object, field: str) -> uuid.UUID:
    """``value`` as a UUID (a UUID or its string form)."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise ValidationError(field, f"must be a UUID, got {value!r}")


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
            field, f"unknown value {value!r}; expected one of {allowed_values(enum_class)}"
        ) from None


def as_enum_list(enum_class: type[E], value: object, field: str) -> list[E]:
    """A non-empty list of members, first occurrence kept, order kept.

    A string is refused even though it is iterable: ``"email"`` is not
    ``["email"]``, and reading it letter by letter would name a confusing value.
    """
    if value is None or isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValidationError(field, f"expected a non-empty list, got {value!r}")
    chosen: list[E] = []
    for item in value:
        member = as_enum(enum_class, item, field)
        if member not in chosen:
            chosen.append(member)
    if not chosen:
        raise ValidationError(field, "expected a non-empty list, got an empty one")
    return chosen
