"""The inbox API for end users: their in-app notifications, the unread badge, marks.

Authenticated by the user's HS256 JWT, the same token the real-time gateway
takes; every query and update is bounded by the token's user, so a user only
ever sees and changes their own rows: another user's notification is 403
(forbidden) and changes nothing; an id that is nobody's is 404. Telling the
two apart reveals nothing guessable: notification ids are random UUIDs.
A change that moves the unread count publishes a ``badge`` frame on the
user's Redis channel, which every gateway forwards to that user's
connections (:func:`realtime.wire.badge_message`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from clarion.core.errors import ValidationError
from clarion.core.parse import as_enum, as_uuid
from clarion.web.app_api import enum_value, iso_time
from clarion.web.auth import User, current_user
from clarion.web.context import WebContext, context
from clarion.web.problems import API_ERRORS, Problem, documented
from models.enums import Category
from models.inbox import InboxFilter
from models.notifications import Notification
from realtime.wire import badge_message, user_channel

log = logging.getLogger("clarion.web")

router = APIRouter(
    prefix="/v1/inbox",
    tags=["inbox"],
    responses={
        **API_ERRORS,
        403: documented("another user's notification"),
        404: documented("no such notification"),
    },
)


class InboxItem(BaseModel):
    notification_id: str
    title: str
    message: str
    category: str
    priority: str
    auction_id: str | None
    action_url: str | None
    action_label: str | None
    rich_content: Any
    status: str
    is_read: bool
    is_archived: bool
    created_at: str | None
    read_at: str | None
    clicked_at: str | None


class InboxPageOut(BaseModel):
    items: list[InboxItem]
    next_cursor: str | None
    unread: int


class Count(BaseModel):
    unread: int


class MarkResult(BaseModel):
    notification_id: str | None = None
    changed: int
    unread: int


def item(row: Notification) -> dict[str, Any]:
    return {
        "notification_id": str(row.notification_id),
        "title": row.title,
        "message": row.message,
        "category": enum_value(row.category),
        "priority": enum_value(row.priority),
        "auction_id": str(row.auction_id) if row.auction_id else None,
        "action_url": row.action_url,
        "action_label": row.action_label,
        "rich_content": row.rich_content,
        "status": enum_value(row.status),
        "is_read": bool(row.is_read),
        "is_archived": bool(row.is_archived),
        "created_at": iso_time(row.created_at),
        "read_at": iso_time(row.read_at),
        "clicked_at": iso_time(row.clicked_at),
    }


def encode_cursor(after: tuple[dt.datetime, uuid.UUID]) -> str:
    created, nid = after
    if created.tzinfo is None:
        created = created.replace(tzinfo=dt.UTC)
    text = f"{created.astimezone(dt.UTC).isoformat()}|{nid}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, nid = text.split("|")
        return dt.datetime.fromisoformat(created), uuid.UUID(nid)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValidationError("cursor", "is not a cursor this API returned") from None


def push_badge(ctx: WebContext, user_id: uuid.UUID) -> int:
    """The user's unread count, published to their gateway connections; returns it."""
    unread = ctx.inbox.unread_count(user_id)
    try:
        ctx.redis.publish(user_channel(user_id), badge_message(unread))
    except Exception as exc:  # the mark is committed; the badge catches up at the next one
        log.warning("badge for user %s not published: %s", user_id, type(exc).__name__)
    return unread


@router.get("", response_model=InboxPageOut, summary="The user's inbox, newest first")
def list_inbox(
    request: Request,
    user: User = Depends(current_user),  # noqa: B008
    unread: bool = False,
    category: str | None = None,
    auction_id: str | None = None,
    archived: bool = False,
    limit: int = Query(20, ge=1, le=100),
    cursor: str | None = None,
) -> dict[str, Any]:
    ctx = context(request)
    filters = InboxFilter(
        unread=unread,
        category=as_enum(Category, category, "category") if category else None,
        auction_id=as_uuid(auction_id, "auction_id") if auction_id else None,
        archived=archived,
    )
    after = decode_cursor(cursor) if cursor else None
    page = ctx.inbox.page(user.user_id, filters, limit=limit, after=after)
    return {
        "items": [item(r) for r in page.rows],
        "next_cursor": encode_cursor(page.next_after) if page.next_after else None,
        "unread": ctx.inbox.unread_count(user.user_id),
    }


@router.get("/count", response_model=Count, summary="The unread badge")
def count(request: Request, user: User = Depends(current_user)) -> dict[str, int]:  # noqa: B008
    return {"unread": context(request).inbox.unread_count(user.user_id)}


def _own(ctx: WebContext, notification_id: str, user: User) -> uuid.UUID:
    nid = as_uuid(notification_id, "notification_id")
    owner = ctx.inbox.owner(nid)
    if owner is None:
        raise Problem(404, f"no notification {nid}", kind="not-found")
    if owner != user.user_id:
        raise Problem(403, f"notification {nid} is another user's", kind="forbidden")
    return nid


@router.post("/read-all", response_model=MarkResult, summary="Mark the whole inbox read")
def read_all(request: Request, user: User = Depends(current_user)) -> dict[str, Any]:  # noqa: B008
    ctx = context(request)
    changed = ctx.inbox.mark_all_read(user.user_id)
    return {"changed": changed, "unread": push_badge(ctx, user.user_id)}


def _mark(request: Request, notification_id: str, user: User, *, clicked: bool) -> dict[str, Any]:
    ctx = context(request)
    nid = _own(ctx, notification_id, user)
    ctx.inbox.mark_user_action(nid, user.user_id, clicked=clicked)
    return {"notification_id": str(nid), "changed": 1, "unread": push_badge(ctx, user.user_id)}


@router.post("/{notification_id}/read", response_model=MarkResult, summary="Mark one read")
def read(
    notification_id: str,
    request: Request,
    user: User = Depends(current_user),  # noqa: B008
) -> dict[str, Any]:
    return _mark(request, notification_id, user, clicked=False)


@router.post(
    "/{notification_id}/click", response_model=MarkResult, summary="Its action was clicked"
)
def click(
    notification_id: str,
    request: Request,
    user: User = Depends(current_user),  # noqa: B008
) -> dict[str, Any]:
    return _mark(request, notification_id, user, clicked=True)


@router.post("/{notification_id}/archive", response_model=MarkResult, summary="Archive one")
def archive(
    notification_id: str,
    request: Request,
    user: User = Depends(current_user),  # noqa: B008
) -> dict[str, Any]:
    ctx = context(request)
    nid = _own(ctx, notification_id, user)
    ctx.inbox.archive(nid, user.user_id)
    return {"notification_id": str(nid), "changed": 1, "unread": push_badge(ctx, user.user_id)}
