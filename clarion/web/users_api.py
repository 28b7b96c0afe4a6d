"""Users' settings and cancellation over HTTP: locale, delivery preferences, cancel.

The same functions as the Python API, with the same validation (these routes
call them): :func:`clarion.set_locale` / :func:`clarion.get_locale`,
:func:`clarion.policy.opt_out` / ``opt_in`` / ``set_quiet_hours`` /
``clear_quiet_hours`` / ``get_preferences``, and :func:`clarion.policy.cancel`.
A platform acts for its users with an API key: writes take the ``send``
scope, reads the ``read`` scope, and an ``operate`` key (the on-call
operator) may do both. A bad argument is 422 naming the field as the body
spells it (``opt_outs[1].channel``, ``quiet_hours.time_zone``) and writes
nothing: each request is one transaction.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from clarion.core.errors import NotFoundError, ValidationError
from clarion.core.parse import as_uuid
from clarion.locales import get_locale, set_locale
from clarion.policy import (
    Preferences,
    cancel,
    clear_quiet_hours,
    get_preferences,
    opt_in,
    opt_out,
    set_quiet_hours,
)
from clarion.web.app_api import IdempotencyKey, _once
from clarion.web.auth import require_scope
from clarion.web.context import context
from clarion.web.problems import API_ERRORS
from models.apikeys import KeyInfo, Scope

router = APIRouter(prefix="/v1", tags=["users"], responses=API_ERRORS)

WRITE = require_scope(Scope.SEND, Scope.OPERATE)
READ = require_scope(Scope.READ, Scope.OPERATE)


class LocaleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    locale: str = Field(..., description="BCP 47 (de, pt-BR; pt_BR is accepted)")


class LocaleOut(BaseModel):
    user_id: str
    locale: str | None


class OptOutIo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: str = Field(..., description="email, sms, push, in_app, webhook")
    category: str | None = Field(None, description="only this category; none: every category")


class QuietHoursIo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: str = Field(..., description="HH:MM on the user's wall clock, e.g. 22:00")
    end: str = Field(..., description="HH:MM, e.g. 07:00 (before start: across midnight)")
    time_zone: str = Field(..., description="IANA time zone, e.g. Europe/Paris")


class PreferencesIn(BaseModel):
    """The whole of a user's preferences: what is not listed is removed."""

    model_config = ConfigDict(extra="forbid")

    opt_outs: list[OptOutIo] = Field(default_factory=list)
    quiet_hours: QuietHoursIo | None = None


class PreferencesOut(BaseModel):
    user_id: str
    opt_outs: list[OptOutIo]
    quiet_hours: QuietHoursIo | None


class CancelIn(BaseModel):
    """``clarion.cancel``'s arguments: at least user_id, auction_id or cancellation_key."""

    model_config = ConfigDict(extra="forbid")

    user_id: str | None = None
    auction_id: str | None = None
    template: str | None = Field(None, description="auction_type/event, e.g. english/outbid")
    cancellation_key: str | None = None
    reason: str | None = None


class CancelOut(BaseModel):
    notifications: int
    deliveries: int
    not_recalled: int


def _prefixed(prefix: str, exc: ValidationError) -> ValidationError:
    return ValidationError(prefix + exc.field, exc.problem)


def preferences_out(prefs: Preferences) -> dict[str, Any]:
    quiet = prefs.quiet_hours
    return {
        "user_id": str(prefs.user_id),
        "opt_outs": [
            {"channel": o.channel.value, "category": o.category.value if o.category else None}
            for o in prefs.opt_outs
        ],
        "quiet_hours": None
        if quiet is None
        else {
            "start": quiet.start.strftime("%H:%M"),
            "end": quiet.end.strftime("%H:%M"),
            "time_zone": quiet.time_zone,
        },
    }


@router.put(
    "/users/{user_id}/locale",
    response_model=LocaleOut,
    summary="Set a user's locale (clarion.set_locale)",
)
def put_locale(
    user_id: str,
    body: LocaleIn,
    request: Request,
    _key: KeyInfo = Depends(WRITE),  # noqa: B008
) -> dict[str, Any]:
    user = as_uuid(user_id, "user_id")
    with context(request).sessions.begin() as s:
        tag = set_locale(user, body.locale, session=s)
    return {"user_id": str(user), "locale": tag}


@router.get(
    "/users/{user_id}/locale",
    response_model=LocaleOut,
    summary="A user's stored locale (null: none)",
)
def read_locale(
    user_id: str,
    request: Request,
    _key: KeyInfo = Depends(READ),  # noqa: B008
) -> dict[str, Any]:
    user = as_uuid(user_id, "user_id")
    with context(request).sessions() as s:
        return {"user_id": str(user), "locale": get_locale(user, session=s)}


@router.get(
    "/users/{user_id}/preferences",
    response_model=PreferencesOut,
    summary="A user's opt-outs and quiet hours",
)
def read_preferences(
    user_id: str,
    request: Request,
    _key: KeyInfo = Depends(READ),  # noqa: B008
) -> dict[str, Any]:
    user = as_uuid(user_id, "user_id")
    with context(request).sessions() as s:
        return preferences_out(get_preferences(user, session=s))


@router.put(
    "/users/{user_id}/preferences",
    response_model=PreferencesOut,
    summary="Replace a user's opt-outs and quiet hours",
)
def put_preferences(
    user_id: str,
    body: PreferencesIn,
    request: Request,
    _key: KeyInfo = Depends(WRITE),  # noqa: B008
) -> dict[str, Any]:
    user = as_uuid(user_id, "user_id")
    with context(request).sessions.begin() as s:
        # Replace: remove every opt-out, then record the listed ones, in one transaction.
        for old in get_preferences(user, session=s).opt_outs:
            opt_in(user, old.channel, old.category, session=s)
        for i, o in enumerate(body.opt_outs):
            try:
                opt_out(user, o.channel, o.category, session=s)
            except ValidationError as exc:
                raise _prefixed(f"opt_outs[{i}].", exc) from None
        if body.quiet_hours is None:
            clear_quiet_hours(user, session=s)
        else:
            q = body.quiet_hours
            try:
                set_quiet_hours(user, q.start, q.end, q.time_zone, session=s)
            except ValidationError as exc:
                raise _prefixed("quiet_hours.", exc) from None
        return preferences_out(get_preferences(user, session=s))


@router.post(
    "/cancel",
    response_model=CancelOut,
    summary="Cancel what is not yet handed to a provider (clarion.cancel)",
)
def post_cancel(
    body: CancelIn,
    request: Request,
    idempotency_key: IdempotencyKey = None,
    key: KeyInfo = Depends(WRITE),  # noqa: B008
) -> JSONResponse:
    def work(s: Session) -> dict[str, Any]:
        try:
            done = cancel(session=s, **body.model_dump(exclude_unset=True))
        except NotFoundError as exc:  # an unknown template is a bad argument here
            raise ValidationError("template", str(exc).split(": ", 1)[-1]) from None
        return {
            "notifications": done.notifications,
            "deliveries": done.deliveries,
            "not_recalled": done.not_recalled,
        }

    return _once(context(request), request, key, idempotency_key, body, 200, work)
