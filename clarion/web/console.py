"""The operators' console at ``/console``: server-rendered HTML, a little JS.

Operators sign in with an API key holding the ``operate`` scope. The session
is a cookie signed with ``CLARION_WEB_SESSION_SECRET`` (itsdangerous, through
Starlette's session middleware), HttpOnly, SameSite=Strict, Secure with
``CLARION_WEB_SECURE_COOKIES``; it holds the key's id (checked again on every
page, so revoking the key ends the session), the sign-in time and a CSRF
token that every form carries and every POST checks.

The pages call the code the CLI calls: ``clarion.operators.status.gather``
(``clarion status``), ``DeadLetterOps`` and ``Filters`` (``clarion dlq``),
``inspect_notification`` (``clarion inspect``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hmac
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from clarion.core.errors import BrokerUnavailable, NotFoundError, ValidationError
from clarion.operators.deadletters import DeadLetters, open_dead_letters
from clarion.operators.dlq import DeadLetterOps, Entry, Filters
from clarion.operators.inspect import inspect_notification, mask_text
from clarion.operators.status import Thresholds, gather
from clarion.web.context import WebContext, context
from clarion.web.problems import Problem
from models.apikeys import KeyInfo, Scope
from models.enums import Channel, ConnectionStatus
from models.notifications import Notification
from models.realtime import WebSocketConnection
from workers.queues import all_queues

router = APIRouter(prefix="/console", include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))

#: Rows of a notification search.
SEARCH_LIMIT = 50


class SignedOut(Exception):
    """No valid console session: go to the sign-in page."""


# --- session and CSRF ------------------------------------------------------------------


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def check_csrf(request: Request, token: str) -> None:
    expected = request.session.get("csrf")
    if not isinstance(expected, str) or not hmac.compare_digest(expected, token):
        raise Problem(
            403,
            "the form is stale or was not sent by the console; reload the page",
            kind="csrf",
            field="csrf",
        )


def operator(request: Request) -> KeyInfo:
    """The signed-in operator's key; :class:`SignedOut` if there is none (any more)."""
    ctx = context(request)
    key_id = request.session.get("key_id")
    started = request.session.get("since")
    if not isinstance(key_id, str) or not isinstance(started, int | float):
        raise SignedOut
    if time.time() - started > ctx.settings.web_session_hours * 3600:
        request.session.clear()
        raise SignedOut
    key = ctx.keys.get(uuid.UUID(key_id))
    if key is None or not key.active or Scope.OPERATE not in key.scopes:
        request.session.clear()
        raise SignedOut
    return key


def page(request: Request, name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    values.setdefault("operator", None)
    return templates.TemplateResponse(
        request,
        name,
        {"csrf": csrf_token(request), "path": request.url.path, **values},
        status_code=status_code,
    )


@contextlib.contextmanager
def dead_letter_ops(ctx: WebContext) -> Iterator[DeadLetterOps]:
    store: DeadLetters = open_dead_letters(ctx.settings.broker_url)
    try:
        yield DeadLetterOps(store, ctx.sessions, lease_seconds=ctx.settings.queued_lease_seconds)
    finally:
        store.close()


# --- sign in and out ---------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    return page(request, "login.html")


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, key: str = Form(""), csrf: str = Form("")) -> Response:
    check_csrf(request, csrf)
    ctx = context(request)
    found = ctx.keys.authenticate(key.strip())
    problem = None
    if found is None:
        problem = "Unknown key."
    elif not found.active:
        problem = "This key was revoked."
    elif Scope.OPERATE not in found.scopes:
        problem = "This key lacks the operate scope."
    if found is None or problem is not None:
        return page(request, "login.html", status_code=401, error=problem)
    request.session.clear()
    request.session.update(
        {"key_id": str(found.key_id), "since": int(time.time()), "csrf": secrets.token_urlsafe(32)}
    )
    return RedirectResponse("/console", status_code=303)


@router.post("/logout")
def logout(request: Request, csrf: str = Form("")) -> Response:
    check_csrf(request, csrf)
    request.session.clear()
    return RedirectResponse("/console/login", status_code=303)


# --- status --------------------------------------------------------------------------------


def live_connections(ctx: WebContext) -> int:
    with ctx.sessions() as s:
        return int(
            s.scalar(
                sa.select(sa.func.count())
                .select_from(WebSocketConnection)
                .where(WebSocketConnection.connection_status == ConnectionStatus.CONNECTED)
            )
            or 0
        )


def status_values(ctx: WebContext) -> dict[str, Any]:
    broker = "rabbitmq" if ctx.settings.broker_url.startswith("amqp") else "redis"
    report = None
    error = None
    try:
        with dead_letter_ops(ctx) as ops:
            report = gather(ctx.sessions, ops.dead_letters, Thresholds(), broker=broker)
    except BrokerUnavailable as exc:
        error = f"broker unreachable: {exc}"
    return {
        "report": report.to_json() if report else None,
        "error": error,
        "connections": live_connections(ctx),
        "now": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


@router.get("", response_class=HTMLResponse)
def status_page(request: Request) -> HTMLResponse:
    key = operator(request)
    return page(request, "status.html", operator=key, **status_values(context(request)))


@router.get("/status/panel", response_class=HTMLResponse)
def status_panel(request: Request) -> HTMLResponse:
    operator(request)
    return page(request, "status_panel.html", **status_values(context(request)))


# --- dead letters ----------------------------------------------------------------------------


def _filters(values: dict[str, str]) -> Filters:
    return Filters.parse(
        channel=values.get("channel") or None,
        queue=values.get("queue") or None,
        since=values.get("since") or None,
        until=values.get("until") or None,
        error=values.get("error") or None,
        limit=values.get("limit") or None,
    )


FILTER_NAMES = ("channel", "queue", "since", "until", "error", "limit")


def _entry_view(entry: Entry) -> dict[str, Any]:
    row = entry.to_json()
    row["last_error"] = mask_text(row["last_error"])
    return row


def _dlq_page(
    request: Request,
    key: KeyInfo,
    raw: dict[str, str],
    *,
    notice: str | None = None,
    results: list[dict[str, Any]] | None = None,
) -> HTMLResponse:
    ctx = context(request)
    values: dict[str, Any] = {
        "operator": key,
        "filters": raw,
        "notice": notice,
        "results": results or [],
    }
    values.update(channels=[c.value for c in Channel], queues=all_queues())
    try:
        filters = _filters(raw)
        with dead_letter_ops(ctx) as ops:
            entries = [_entry_view(e) for e in ops.select(filters)]
    except ValidationError as exc:
        return page(request, "dlq.html", status_code=422, entries=[], error=str(exc), **values)
    except BrokerUnavailable as exc:
        return page(request, "dlq.html", status_code=503, entries=[], error=str(exc), **values)
    return page(request, "dlq.html", entries=entries, error=None, **values)


@router.get("/dead-letters", response_class=HTMLResponse)
def dead_letters(request: Request) -> HTMLResponse:
    key = operator(request)
    raw = {k: request.query_params.get(k, "") for k in FILTER_NAMES}
    return _dlq_page(request, key, raw)


@router.get("/dead-letters/{ident}", response_class=HTMLResponse)
def dead_letter(request: Request, ident: str) -> HTMLResponse:
    key = operator(request)
    ctx = context(request)
    with dead_letter_ops(ctx) as ops:
        try:
            [entry] = ops.find([ident])[:1]
        except NotFoundError as exc:
            return page(request, "error.html", status_code=404, operator=key, error=str(exc))
        history: dict[str, Any] | None = None
        if entry.letter.delivery_id is not None:
            n, _d, _a = ops.history(entry.letter.delivery_id)
            if n is not None:
                history = inspect_notification(ctx.sessions, n.notification_id)
    letter = entry.letter
    traceback = letter.message.options.get("traceback")
    return page(
        request,
        "dlq_show.html",
        operator=key,
        entry=_entry_view(entry),
        actor=letter.actor,
        enqueued_at=letter.message.message_datetime.isoformat(timespec="seconds"),
        traceback_last_line=mask_text(traceback.strip().splitlines()[-1]) if traceback else None,
        inspected=history,
    )


async def _form(request: Request) -> tuple[dict[str, str], list[str]]:
    form = await request.form()
    values = {k: str(v) for k, v in form.items() if k != "id"}
    ids = [str(v) for v in form.getlist("id") if str(v).strip()]
    return values, ids


def _select(ops: DeadLetterOps, raw: dict[str, str], ids: list[str]) -> list[Entry]:
    filters = _filters(raw)
    if ids:
        return ops.find(ids, filters)
    if raw.get("all") != "yes":
        raise ValidationError("id", "choose dead letters, or all that match the filters")
    return ops.select(filters)


def _act(
    request: Request, key: KeyInfo, raw: dict[str, str], ids: list[str], verb: str
) -> Response:
    ctx = context(request)
    filters_only = {k: raw.get(k, "") for k in FILTER_NAMES}
    try:
        with dead_letter_ops(ctx) as ops:
            entries = _select(ops, raw, ids)
            if verb == "purge" and raw.get("confirm") != "yes":
                # Purging loses the messages: ask first, listing what would go.
                return page(
                    request,
                    "confirm.html",
                    operator=key,
                    entries=[_entry_view(e) for e in entries],
                    ids=ids,
                    raw=raw,
                    filters=filters_only,
                )
            run = ops.requeue if verb == "requeue" else ops.purge
            counts, results = run(entries)
    except (ValidationError, NotFoundError) as exc:
        status = 404 if isinstance(exc, NotFoundError) else 422
        return page(request, "error.html", status_code=status, operator=key, error=str(exc))
    done = "requeued" if verb == "requeue" else "purged"
    notice = f"{done} {counts.done}, skipped {counts.skipped}, failed {counts.failed}"
    shown = [r.to_json() for r in results if r.reason]
    return _dlq_page(request, key, filters_only, notice=notice, results=shown)


@router.post("/dead-letters/requeue", response_class=HTMLResponse)
async def requeue(request: Request) -> Response:
    raw, ids = await _form(request)
    check_csrf(request, raw.get("csrf", ""))
    key = operator(request)
    return await _in_thread(_act, request, key, raw, ids, "requeue")


@router.post("/dead-letters/purge", response_class=HTMLResponse)
async def purge(request: Request) -> Response:
    raw, ids = await _form(request)
    check_csrf(request, raw.get("csrf", ""))
    key = operator(request)
    return await _in_thread(_act, request, key, raw, ids, "purge")


async def _in_thread(fn: Any, *args: Any) -> Response:
    from starlette.concurrency import run_in_threadpool

    response: Response = await run_in_threadpool(fn, *args)
    return response


# --- notifications ----------------------------------------------------------------------------


def timeline(found: dict[str, Any]) -> list[dict[str, Any]]:
    """The notification's life as one list of moments, oldest first."""
    n = found["notification"]
    moments: list[dict[str, Any]] = []

    def add(at: str | None, what: str, channel: str = "", detail: str | None = None) -> None:
        if at:
            moments.append({"at": at, "what": what, "channel": channel, "detail": detail or ""})

    add(n["created_at"], "created", detail=f"priority {n['priority']}, channels {n['channels']}")
    add(n["scheduled_at"], "scheduled for")
    add(n["dispatched_at"], "claimed by a scheduler")
    for d in found["deliveries"]:
        ch = d["channel"]
        add(d["queued_at"], "queued", ch, f"queue {d['queue']}")
        for a in d["history"]:
            add(
                a["at"],
                f"attempt {a['attempt_number']}: {a['outcome']}",
                ch,
                " ".join(
                    x
                    for x in (
                        a["provider"],
                        f"{a['duration_ms']} ms" if a["duration_ms"] is not None else "",
                        a["error"] or "",
                    )
                    if x
                ),
            )
        add(d["sent_at"], "sent (provider accepted)", ch, d["provider_message_id"])
        add(d["delivered_at"], "delivered", ch)
        add(d["failed_at"], "failed", ch, d["last_error"])
        add(d["dead_lettered_at"], "dead-lettered", ch, "waits in the dead-letter queue")
        if d["throttles"]:
            moments.append(
                {
                    "at": d["queued_at"] or n["created_at"],
                    "what": f"policy: waited {d['throttles']} time(s) for a throttled or "
                    "down provider without burning an attempt",
                    "channel": ch,
                    "detail": "",
                }
            )
    add(n["expires_at"], "expires")
    receipts = found.get("receipts", {})
    add(receipts.get("read_at"), "read by the user")
    add(receipts.get("clicked_at"), "clicked by the user")
    return sorted(moments, key=lambda m: m["at"])


def _receipts(ctx: WebContext, nid: uuid.UUID) -> dict[str, Any]:
    with ctx.sessions() as s:
        row = s.get(Notification, nid)
        if row is None:
            return {}

        def iso(v: dt.datetime | None) -> str | None:
            if v is None:
                return None
            return (v if v.tzinfo else v.replace(tzinfo=dt.UTC)).isoformat(timespec="seconds")

        return {"read_at": iso(row.read_at), "clicked_at": iso(row.clicked_at)}


@router.get("/notifications", response_class=HTMLResponse)
def search(request: Request) -> Response:
    key = operator(request)
    ctx = context(request)
    by = request.query_params.get("by", "id")
    q = request.query_params.get("q", "").strip()
    rows: list[dict[str, Any]] = []
    error = None
    if q:
        try:
            value = uuid.UUID(q)
        except ValueError:
            error = f"{q!r} is not an id (a UUID)"
        else:
            n = Notification
            column = {"id": n.notification_id, "user": n.user_id, "auction": n.auction_id}.get(by)
            if column is None:
                error = "search by id, user or auction"
            else:
                with ctx.sessions() as s:
                    found = s.scalars(
                        sa.select(n).where(column == value).order_by(n.created_at.desc())
                    ).all()
                    if by == "id" and len(found) == 1:
                        return RedirectResponse(f"/console/notifications/{value}", status_code=303)
                    rows = [
                        {
                            "notification_id": str(r.notification_id),
                            "user_id": str(r.user_id),
                            "title": r.title,
                            "status": str(getattr(r.status, "value", r.status)),
                            "channels": ", ".join(r.delivery_channels),
                            "created_at": r.created_at.isoformat(timespec="seconds"),
                        }
                        for r in found[:SEARCH_LIMIT]
                    ]
    return page(
        request,
        "search.html",
        status_code=422 if error else 200,
        operator=key,
        by=by,
        q=q,
        rows=rows,
        error=error,
    )


@router.get("/notifications/{notification_id}", response_class=HTMLResponse)
def notification_page(request: Request, notification_id: str) -> HTMLResponse:
    key = operator(request)
    ctx = context(request)
    try:
        nid = uuid.UUID(notification_id)
        found = inspect_notification(ctx.sessions, nid)
    except (ValueError, NotFoundError):
        return page(
            request,
            "error.html",
            status_code=404,
            operator=key,
            error=f"no notification {notification_id}",
        )
    found["receipts"] = _receipts(ctx, nid)
    return page(request, "notification.html", operator=key, found=found, moments=timeline(found))
