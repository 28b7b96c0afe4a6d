"""``api_keys``: the keys of ``clarion web``'s application API and console, stored hashed.

A key is ``clk_<lookup>_<secret>``: ``lookup`` (12 hex characters) finds the
row, the SHA-256 of the whole key is compared in constant time. The key has
256 bits of randomness, so a fast hash is enough (nothing to brute-force a
password out of); the key itself is shown once, at creation, and never
stored, logged or printed again. Every write to the table is here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from clarion.core.clock import utcnow
from clarion.core.errors import NotFoundError, ValidationError
from models.base import Base, JSONType, Timestamp

PREFIX = "clk_"
NAME_MAX = 100


class Scope(enum.StrEnum):
    """What a key may do: create (``send``), read (``read``), operate the farm (``operate``)."""

    SEND = "send"
    READ = "read"
    OPERATE = "operate"


class ApiKey(Base):
    """One API key: its name, scopes, the hash of the key, and whether it was revoked."""

    __tablename__ = "api_keys"

    key_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(sa.String(NAME_MAX))
    lookup: Mapped[str] = mapped_column(sa.String(12), unique=True)
    key_hash: Mapped[str] = mapped_column(sa.String(64))
    scopes: Mapped[list[str]] = mapped_column(JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(
        Timestamp, server_default=sa.func.current_timestamp(), default=utcnow
    )
    last_used_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)


@dataclasses.dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as it may be shown: never the key or its hash."""

    key_id: uuid.UUID
    name: str
    lookup: str
    scopes: tuple[Scope, ...]
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        row.key_id,
        row.name,
        row.lookup,
        tuple(Scope(s) for s in row.scopes),
        row.created_at,
        row.last_used_at,
        row.revoked_at,
    )


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_scopes(values: Iterable[str]) -> tuple[Scope, ...]:
    """Scope names (``send``, ``read``, ``operate``) -> scopes; ValidationError naming a bad one."""
    chosen: list[Scope] = []
    for value in values:
        for part in str(value).split(","):
            name = part.strip()
            if not name:
                continue
            try:
                scope = Scope(name)
            except ValueError:
                raise ValidationError(
                    "scope", f"unknown scope {name!r}; one of {', '.join(s.value for s in Scope)}"
                ) from None
            if scope not in chosen:
                chosen.append(scope)
    if not chosen:
        raise ValidationError("scope", "give at least one of send, read, operate")
    return tuple(chosen)


class ApiKeys:
    """Create, list, revoke and check API keys."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def create(self, name: str, scopes: Iterable[Scope]) -> tuple[KeyInfo, str]:
        """A new key; returns its row and the key itself (the only time it exists in clear)."""
        name = name.strip()
        if not name or len(name) > NAME_MAX:
            raise ValidationError("name", f"must be 1 to {NAME_MAX} characters")
        lookup = secrets.token_hex(6)
        key = f"{PREFIX}{lookup}_{secrets.token_urlsafe(32)}"
        row = ApiKey(
            key_id=uuid.uuid4(),
            name=name,
            lookup=lookup,
            key_hash=_digest(key),
            scopes=[Scope(s).value for s in scopes],
            created_at=utcnow(),
        )
        with self.sessions.begin() as s:
            s.add(row)
            s.flush()
            info = _info(row)
        return info, key

    def list(self, *, include_revoked: bool = True) -> list[KeyInfo]:
        with self.sessions() as s:
            query = sa.select(ApiKey).order_by(ApiKey.created_at)
            if not include_revoked:
                query = query.where(ApiKey.revoked_at.is_(None))
            return [_info(r) for r in s.scalars(query)]

    def get(self, key_id: uuid.UUID) -> KeyInfo | None:
        with self.sessions() as s:
            row = s.get(ApiKey, key_id)
            return _info(row) if row is not None else None

    def revoke(self, ident: str) -> KeyInfo:
        """Revoke a key by its id or its lookup prefix; NotFoundError if there is none."""
        with self.sessions.begin() as s:
            row = self._find(s, ident)
            if row is None:
                raise NotFoundError(f"no API key {ident!r}")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            s.flush()
            return _info(row)

    def _find(self, s: Session, ident: str) -> ApiKey | None:
        text = ident.strip()
        if text.startswith(PREFIX):
            text = text[len(PREFIX) :].split("_", 1)[0]
        try:
            return s.get(ApiKey, uuid.UUID(text))
        except ValueError:
            return s.scalars(sa.select(ApiKey).where(ApiKey.lookup == text)).one_or_none()

    def authenticate(self, key: str) -> KeyInfo | None:
        """The key's row if ``key`` is a key Clarion issued (revoked or not), else None."""
        if not key.startswith(PREFIX):
            return None
        lookup = key[len(PREFIX) :].split("_", 1)[0]
        if len(lookup) != 12:
            return None
        with self.sessions.begin() as s:
            row = s.scalars(sa.select(ApiKey).where(ApiKey.lookup == lookup)).one_or_none()
            if row is None or not hmac.compare_digest(row.key_hash, _digest(key)):
                return None
            if row.revoked_at is None:
                now = utcnow()
                last = row.last_used_at
                # At most one write a minute per key: a busy key would otherwise
                # write its row on every request.
                if last is None or now - _aware(last) > dt.timedelta(minutes=1):
                    row.last_used_at = now
            return _info(row)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
