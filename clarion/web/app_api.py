"""The application API: create notifications and events over HTTP, read a notification.

The same arguments and validation as :func:`clarion.notify` and
:func:`clarion.publish_event` (these routes call them): the JSON body is
checked for shape and types first (422 naming the field), then by Clarion's
own rules (the same ``ValidationError`` a Python caller gets, as 422 naming
the argument).

``Idempotency-Key`` (on every POST): the first request's answer is stored
with a hash of the request, in the same transaction as the rows it created
(:mod:`models.idempotency`); a repeat with the same body gets that answer
again (``Idempotent-Replayed: true``), a repeat with a different body 409.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from clarion.api import notify
from clarion.bulk import notify_many
from clarion.core.errors import NotFoundError, ValidationError
from clarion.core.parse import as_uuid
from clarion.operators.inspect import inspect_notification
from clarion.web.auth import require_scope
from clarion.web.context import WebContext, context
from clarion.web.problems import API_ERRORS, Problem, documented
from models import idempotency
from models.apikeys import KeyInfo, Scope
from models.notifications import Notification
from realtime.outbox import EventSpec, event_payload, record_event

router = APIRouter(
    prefix="/v1",
    tags=["application"],
    responses={
        **API_ERRORS,
        409: documented("the Idempotency-Key was used with another request"),
    },
)

#: Notifications in one bulk request.
BULK_MAX = 1000

ANY_JSON = Any


class NotificationIn(BaseModel):
    """The arguments of ``clarion.notify``; see the README's "Creating notifications"."""

    model_config = ConfigDict(extra="forbid")

    user_id: str
    template: str | None = Field(None, description="auction_type/event, e.g. english/outbid")
    template_data: dict[str, Any] | None = None
    title: str | None = None
    message: str | None = None
    category: str | None = Field(None, description="auction, bid, payment, system, marketing")
    priority: str | None = Field(None, description="low, normal, high, urgent")
    channels: list[str] | None = Field(None, description="email, sms, push, in_app, webhook")
    scheduled_at: dt.datetime | None = Field(None, description="ISO 8601 with an offset")
    expires_at: dt.datetime | None = Field(None, description="ISO 8601 with an offset")
    auction_id: str | None = None
    bid_id: str | None = None
    item_id: str | None = None
    action_url: str | None = None
    action_label: str | None = None
    rich_content: ANY_JSON = None
    tags: ANY_JSON = None
    metadata: ANY_JSON = None
    max_attempts: int = 3
    idempotency_key: str | None = Field(
        None, description="the notification's own key, as in clarion.notify"
    )
    locale: str | None = Field(
        None, description="BCP 47: render in this locale this once (else the user's stored one)"
    )
    cancellation_key: str | None = Field(
        None, description="a key POST /v1/cancel can later cancel it by"
    )


class BulkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    notifications: list[NotificationIn] = Field(..., min_length=1, max_length=BULK_MAX)


class EventIn(BaseModel):
    """The arguments of ``clarion.publish_event``; see the README's "Real time"."""

    model_config = ConfigDict(extra="forbid")

    event_type: str
    event_data: dict[str, Any]
    category: str | None = None
    visibility: str = "public"
    priority: str = "normal"
    auction_id: str | None = None
    user_id: str | None = None
    bid_id: str | None = None
    item_id: str | None = None
    event_metadata: ANY_JSON = None
    target_audience: list[str] | None = None
    broadcast_channels: list[str] | None = None
    previous_event_id: str | None = None
    correlation_id: str | None = None
    causal_events: list[str] | None = None
    expected_impacts: ANY_JSON = None
    expires_at: dt.datetime | None = None
    retention_policy: str = "standard"
    ack_required: bool = False
    ack_timeout: int = 30
    tags: ANY_JSON = None


class NotificationOut(BaseModel):
    notification_id: str
    user_id: str
    status: str
    channels: list[str]
    category: str
    priority: str
    created_at: str
    scheduled_at: str | None
    expires_at: str | None
    idempotency_key: str | None


class BulkOut(BaseModel):
    notifications: list[NotificationOut]


class EventOut(BaseModel):
    event_id: str
    sequence_number: int
    event_type: str
    category: str
    visibility: str
    broadcast_channels: list[str]


def iso_time(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat()


def enum_value(v: Any) -> str:
    return str(getattr(v, "value", v))


def notification_out(row: Notification) -> dict[str, Any]:
    return {
        "notification_id": str(row.notification_id),
        "user_id": str(row.user_id),
        "status": enum_value(row.status),
        "channels": list(row.delivery_channels),
        "category": enum_value(row.category),
        "priority": enum_value(row.priority),
        "created_at": iso_time(row.created_at),
        "scheduled_at": iso_time(row.scheduled_at),
        "expires_at": iso_time(row.expires_at),
        "idempotency_key": row.idempotency_key,
    }


def _create(session: Session, body: NotificationIn, field: str = "") -> Notification:
    args = body.model_dump(exclude_unset=True)
    user_id = args.pop("user_id")
    try:
        return notify(user_id, session=session, **args)
    except ValidationError as exc:
        raise ValidationError(field + exc.field, exc.problem) from None
    except NotFoundError as exc:
        # An unknown template is a bad argument of this request, not a missing resource.
        raise ValidationError(field + "template", str(exc).split(": ", 1)[-1]) from None


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=idempotency.KEY_MAX,
        description="A repeat with the same body returns the first answer; another body is 409.",
    ),
]


def _once(
    ctx: WebContext,
    request: Request,
    key: KeyInfo,
    idempotency_key: str | None,
    body: BaseModel,
    status: int,
    work: Callable[[Session], Any],
) -> JSONResponse:
    """Run ``work`` in one transaction, at most once per idempotency key."""
    request_hash = hashlib.sha256(
        json.dumps(
            [request.method, request.url.path, body.model_dump(mode="json", exclude_unset=True)],
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
    ).hexdigest()
    with ctx.sessions.begin() as s:
        if idempotency_key is not None:
            if not idempotency_key.strip():
                raise ValidationError("Idempotency-Key", "must not be blank")
            stored = idempotency.claim(s, key.key_id, idempotency_key, request_hash)
            if stored is not None:
                if stored.request_hash != request_hash:
                    raise Problem(
                        409,
                        "Idempotency-Key: was used with a different request",
                        kind="idempotency-conflict",
                        field="Idempotency-Key",
                    )
                return JSONResponse(
                    stored.response,
                    status_code=stored.status_code,
                    headers={"Idempotent-Replayed": "true"},
                )
        result = work(s)
        if idempotency_key is not None:
            idempotency.record(s, key.key_id, idempotency_key, status, result)
    return JSONResponse(result, status_code=status)


@router.post(
    "/notifications",
    status_code=201,
    response_model=NotificationOut,
    summary="Create a notification (clarion.notify)",
)
def create_notification(
    body: NotificationIn,
    request: Request,
    idempotency_key: IdempotencyKey = None,
    key: KeyInfo = Depends(require_scope(Scope.SEND)),  # noqa: B008
) -> JSONResponse:
    return _once(
        context(request),
        request,
        key,
        idempotency_key,
        body,
        201,
        lambda s: notification_out(_create(s, body)),
    )


@router.post(
    "/notifications/bulk",
    status_code=201,
    response_model=BulkOut,
    summary="Create several notifications in one transaction: all or none",
)
def create_notifications(
    body: BulkIn,
    request: Request,
    idempotency_key: IdempotencyKey = None,
    key: KeyInfo = Depends(require_scope(Scope.SEND)),  # noqa: B008
) -> JSONResponse:
    # One clarion.notify_many call: every entry checked and rendered, then
    # multi-row INSERTs; an invalid entry refuses the whole request naming it
    # (notifications[3].title).
    def work(s: Session) -> dict[str, Any]:
        entries = [n.model_dump(exclude_unset=True) for n in body.notifications]
        try:
            ids = notify_many(entries, session=s)
        except ValidationError as exc:
            field = exc.field.replace("entries[", "notifications[", 1)
            raise ValidationError(field, exc.problem) from None
        found = {
            r.notification_id: r
            for r in s.scalars(sa.select(Notification).where(Notification.notification_id.in_(ids)))
        }
        return {"notifications": [notification_out(found[i]) for i in ids]}

    return _once(context(request), request, key, idempotency_key, body, 201, work)


@router.get(
    "/notifications/{notification_id}",
    summary="A notification: status, per-channel deliveries, attempt history (no secrets)",
)
def get_notification(
    notification_id: str,
    request: Request,
    _key: KeyInfo = Depends(require_scope(Scope.READ)),  # noqa: B008
) -> dict[str, Any]:
    nid = as_uuid(notification_id, "notification_id")
    found = inspect_notification(context(request).sessions, nid)
    found.pop("addresses", None)  # the user's addresses are not the caller's business
    return found


@router.post(
    "/events",
    status_code=201,
    response_model=EventOut,
    summary="Publish a real-time event (clarion.publish_event)",
)
def create_event(
    body: EventIn,
    request: Request,
    idempotency_key: IdempotencyKey = None,
    key: KeyInfo = Depends(require_scope(Scope.SEND)),  # noqa: B008
) -> JSONResponse:
    ctx = context(request)

    def work(s: Session) -> dict[str, Any]:
        spec = EventSpec(**body.model_dump(exclude_unset=True))
        row = record_event(s, spec, ctx.outlet)  # published to Redis after the commit
        payload = event_payload(row)
        return {
            "event_id": payload["event_id"],
            "sequence_number": payload["seq"],
            "event_type": payload["event_type"],
            "category": payload["category"],
            "visibility": payload["visibility"],
            "broadcast_channels": payload["channels"],
        }

    return _once(ctx, request, key, idempotency_key, body, 201, work)
