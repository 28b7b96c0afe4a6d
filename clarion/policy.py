"""The application API of the delivery policy: users' settings, templates, cancel.

* :func:`opt_out` / :func:`opt_in`: a user's opt-out of a channel, or of a
  category on a channel;
* :func:`set_quiet_hours` / :func:`clear_quiet_hours`: a daily window in the
  user's IANA time zone during which non-urgent messages are held;
* :func:`get_preferences`: both, as stored;
* :func:`set_template_policy`: mark a template required, or collapsible with
  its window and follow-up texts;
* :func:`cancel`: cancel what is not yet handed to a provider (the user bid
  again, the auction ended).

The rules themselves are applied by the scheduler at each claim
(``models.policy``; README, "Delivery policy"). Like :func:`clarion.notify`,
each call joins the caller's transaction when given ``session`` and commits
its own otherwise. Arguments are checked and a bad one raises
:class:`clarion.ValidationError` naming it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import uuid
import zoneinfo
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session

from clarion.api import TEMPLATE_KEY_MAX, UUIDLike, template_rows
from clarion.core.clock import utcnow
from clarion.core.db import get_engine, session_factory
from clarion.core.errors import NotFoundError, ValidationError
from clarion.core.parse import as_enum, as_optional_uuid, as_text, as_uuid, shown
from clarion.core.settings import get_settings
from clarion.locales import normalize_locale
from models.cancellation import CancelFilter, Cancelled, cancel_pending
from models.enums import Category, Channel
from models.policy import QuietHours
from models.preferences import OptOut, PreferenceStore

__all__ = [
    "Cancelled",
    "OptOut",
    "Preferences",
    "QuietHours",
    "cancel",
    "clear_quiet_hours",
    "get_preferences",
    "opt_in",
    "opt_out",
    "set_quiet_hours",
    "set_template_policy",
]

T = TypeVar("T")

REASON_MAX = 255
#: Longest collapse window a template may set: a day.
COLLAPSE_WINDOW_MAX = 86_400
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


@dataclasses.dataclass(frozen=True, slots=True)
class Preferences:
    user_id: uuid.UUID
    opt_outs: tuple[OptOut, ...]
    quiet_hours: QuietHours | None


def _run(session: Session | None, fn: Callable[[Session], T]) -> T:
    if session is not None:
        return fn(session)
    engine = get_engine(get_settings().effective_database_url)
    with session_factory(engine)() as own, own.begin():
        return fn(own)


def _category(value: object) -> Category | None:
    return None if value is None else as_enum(Category, value, "category")


def opt_out(
    user_id: UUIDLike,
    channel: Channel | str,
    category: Category | str | None = None,
    *,
    session: Session | None = None,
) -> bool:
    """Stop ``channel`` for the user, for every category or only ``category``.

    Required templates and categories still go through. Returns False when
    the same opt-out was already recorded.
    """
    user = as_uuid(user_id, "user_id")
    chan = as_enum(Channel, channel, "channel")
    cat = _category(category)
    return _run(session, lambda s: PreferenceStore(s).opt_out(user, chan, cat))


def opt_in(
    user_id: UUIDLike,
    channel: Channel | str,
    category: Category | str | None = None,
    *,
    session: Session | None = None,
) -> bool:
    """Remove an opt-out recorded by :func:`opt_out`; False when there was none."""
    user = as_uuid(user_id, "user_id")
    chan = as_enum(Channel, channel, "channel")
    cat = _category(category)
    return _run(session, lambda s: PreferenceStore(s).opt_in(user, chan, cat))


def _clock(value: object, field: str) -> dt.time:
    if isinstance(value, dt.time):
        if value.tzinfo is not None:
            raise ValidationError(field, "must be a wall-clock time without a time zone")
        return value.replace(microsecond=0)
    match = _CLOCK.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValidationError(field, f"expected a time as HH:MM (e.g. 22:00), got {shown(value)}")
    return dt.time(int(match.group(1)), int(match.group(2)))


def _zone(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise ValidationError("time_zone", f"expected an IANA time zone name, got {shown(value)}")
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(
            "time_zone", f"unknown IANA time zone {shown(value)} (e.g. Europe/Paris)"
        ) from exc
    return value


def set_quiet_hours(
    user_id: UUIDLike,
    start: str | dt.time,
    end: str | dt.time,
    time_zone: str,
    *,
    session: Session | None = None,
) -> QuietHours:
    """Hold the user's non-urgent messages (not in-app) between ``start`` and ``end``
    (``"22:00"``, ``"07:00"``: across midnight) on the wall clock of ``time_zone``."""
    user = as_uuid(user_id, "user_id")
    quiet = QuietHours(_zone(time_zone), _clock(start, "start"), _clock(end, "end"))
    if quiet.start == quiet.end:
        raise ValidationError("end", "is the same as start: an empty window")

    def write(s: Session) -> QuietHours:
        PreferenceStore(s).set_quiet_hours(user, quiet)
        return quiet

    return _run(session, write)


def clear_quiet_hours(user_id: UUIDLike, *, session: Session | None = None) -> bool:
    """Remove the user's quiet hours; False when there were none."""
    user = as_uuid(user_id, "user_id")
    return _run(session, lambda s: PreferenceStore(s).clear_quiet_hours(user))


def get_preferences(user_id: UUIDLike, *, session: Session | None = None) -> Preferences:
    """The user's opt-outs and quiet hours."""
    user = as_uuid(user_id, "user_id")

    def read(s: Session) -> Preferences:
        store = PreferenceStore(s)
        return Preferences(user, tuple(store.opt_outs(user)), store.quiet_hours(user))

    return _run(session, read)


def set_template_policy(
    template: str,
    *,
    required: bool | None = None,
    collapsible: bool | None = None,
    collapse_window: int | None = None,
    collapse_title: str | None = None,
    collapse_message: str | None = None,
    locale: str | None = None,
    session: Session | None = None,
) -> None:
    """Mark ``template`` (``"auction_type/event"``) required (it ignores opt-outs,
    quiet hours and the rate limit) or collapsible (one message at once, the
    rest of ``collapse_window`` seconds folded into one follow-up rendered from
    ``collapse_title``/``collapse_message`` with the latest values, ``{count}``
    and ``{more}``). Arguments left None are not changed.

    The follow-up texts are written on every language's row of the template,
    or with ``locale`` (``"de"``) on that language's row only (each shipped
    locale has its own); the flags and the window are always the template's
    in every language. An unknown ``locale`` raises :class:`NotFoundError`."""
    if not isinstance(template, str) or len(template) > TEMPLATE_KEY_MAX:
        raise ValidationError("template", f"expected 'auction_type/event', got {shown(template)}")
    for name, flag in (("required", required), ("collapsible", collapsible)):
        if flag is not None and not isinstance(flag, bool):
            raise ValidationError(name, f"expected true or false, got {shown(flag)}")
    if collapse_window is not None and (
        isinstance(collapse_window, bool)
        or not isinstance(collapse_window, int)
        or not 1 <= collapse_window <= COLLAPSE_WINDOW_MAX
    ):
        raise ValidationError(
            "collapse_window",
            f"expected whole seconds from 1 to {COLLAPSE_WINDOW_MAX}, got {shown(collapse_window)}",
        )
    title = None if collapse_title is None else as_text(collapse_title, "collapse_title", limit=255)
    message = (
        None
        if collapse_message is None
        else as_text(collapse_message, "collapse_message", limit=10_000)
    )

    language = None if locale is None else normalize_locale(locale)

    def write(s: Session) -> None:
        # The policy is the template's, in every language it is written in.
        rows = template_rows(s, template)
        if language is not None and language not in {t.locale for t in rows}:
            raise NotFoundError(f"template: {template!r} has no row in locale {language!r}")
        for tmpl in rows:
            if required is not None:
                tmpl.required = required
            if collapsible is not None:
                tmpl.collapsible = collapsible
            if collapse_window is not None:
                tmpl.collapse_window_seconds = collapse_window
            if language is not None and tmpl.locale != language:
                continue
            if title is not None:
                tmpl.collapse_title = title
            if message is not None:
                tmpl.collapse_message = message
        s.flush()

    _run(session, write)


def cancel(
    *,
    user_id: UUIDLike | None = None,
    auction_id: UUIDLike | None = None,
    template: str | None = None,
    cancellation_key: str | None = None,
    reason: str | None = None,
    session: Session | None = None,
) -> Cancelled:
    """Cancel what is not yet handed to a provider, among the notifications selected
    by every given argument (at least ``user_id``, ``auction_id`` or
    ``cancellation_key``):

    * the user bid again: ``cancel(user_id=u, auction_id=a, template="english/outbid")``;
    * the auction ended: ``cancel(auction_id=a, template="english/outbid")``;
    * by the key given to :func:`clarion.notify`: ``cancel(cancellation_key=k)``.

    A notification not yet claimed ends ``cancelled``; a claimed one has every
    channel still queued, waiting for a retry or held by the policy
    cancelled. A channel already sending or sent is not recalled (counted in
    the result's ``not_recalled``).
    """
    which = CancelFilter(
        user_id=as_optional_uuid(user_id, "user_id"),
        auction_id=as_optional_uuid(auction_id, "auction_id"),
        cancellation_key=None
        if cancellation_key is None
        else as_text(cancellation_key, "cancellation_key", limit=255),
    )
    if which.user_id is None and which.auction_id is None and which.cancellation_key is None:
        raise ValidationError(
            "cancel",
            "give user_id, auction_id or cancellation_key (cancelling everything is refused)",
        )
    text = (
        "cancelled by the application"
        if reason is None
        else as_text(reason, "reason", limit=REASON_MAX)
    )

    def write(s: Session) -> Cancelled:
        chosen = which
        if template is not None:
            ids = tuple(t.template_id for t in template_rows(s, template))
            chosen = dataclasses.replace(which, template_ids=ids)
        s.flush()
        return cancel_pending(s.connection(), chosen, text, utcnow())

    return _run(session, write)
