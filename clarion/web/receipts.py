"""Receipts, unsubscribe: the endpoints providers and mail clients call.

* ``POST /receipts/ses``: Amazon SNS (HTTP/S subscription) delivering SES
  events; verified by :mod:`clarion.receipts.sns`;
* ``POST /receipts/twilio``: Twilio's ``StatusCallback``; validated over
  ``CLARION_PUBLIC_BASE_URL`` + path;
* ``GET /unsubscribe/{token}``: a confirmation page, which never unsubscribes
  by itself (mail scanners follow links);
* ``POST /unsubscribe/{token}``: RFC 8058 one-click (body
  ``List-Unsubscribe=One-Click``), also what the page's button sends.

No API key: each request carries its own proof (a signature, a token). A
refused request gets 403 and changes nothing; an unknown message id gets 200
(providers retry anything else) and is counted.
"""

from __future__ import annotations

import html

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse

from clarion.receipts import sns
from clarion.receipts.service import Answer, ReceiptService
from clarion.receipts.twilio_status import CALLBACK_PATH
from clarion.web.context import context

router = APIRouter(tags=["receipts"], include_in_schema=True)

_ONE_CLICK = "List-Unsubscribe=One-Click"


def service(request: Request) -> ReceiptService:
    """This process's :class:`ReceiptService`, made on first use from the web context."""
    found: ReceiptService | None = getattr(request.app.state, "receipts", None)
    if found is None:
        ctx = context(request)
        timeout = ctx.settings.provider_timeout

        def confirm(url: str) -> None:
            import requests

            requests.get(url, timeout=timeout, allow_redirects=False).raise_for_status()

        found = ReceiptService(
            settings=ctx.settings,
            engine=ctx.engine,
            certificates=sns.CertificateStore(sns.fetch_https(timeout), cache=ctx.redis),
            confirm=confirm,
        )
        request.app.state.receipts = found
    return found


@router.post("/receipts/ses", summary="SES events through Amazon SNS (HTTP/S subscription)")
async def ses_receipt(request: Request) -> PlainTextResponse:
    body = await request.body()
    answer, text = service(request).sns(body)
    return PlainTextResponse(text, status_code=int(answer))


@router.post(CALLBACK_PATH, summary="Twilio StatusCallback")
async def twilio_receipt(request: Request) -> PlainTextResponse:
    form = await request.form()
    params = {k: v for k, v in form.items() if isinstance(v, str)}
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    signature = request.headers.get("x-twilio-signature", "")
    answer, text = service(request).twilio(path, params, signature)
    return PlainTextResponse(text, status_code=int(answer))


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width">'
        f"<title>{html.escape(title)}</title></head><body>"
        f"<main><h1>{html.escape(title)}</h1>{body}</main></body></html>",
        status_code=status,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


_FORGED = "<p>This unsubscribe link is not valid. Use the link in a recent email.</p>"


@router.get("/unsubscribe/{token}", summary="Unsubscribe: confirmation page (changes nothing)")
def unsubscribe_page(token: str, request: Request) -> HTMLResponse:
    found = service(request).read_unsubscribe(token)
    if found is None:
        return _page("Link not valid", _FORGED, 403)
    category = html.escape(found.category)
    return _page(
        "Unsubscribe",
        f"<p>Stop emails about <strong>{category}</strong>?</p>"
        f'<form method=post action="/unsubscribe/{html.escape(token)}">'
        f'<input type=hidden name="List-Unsubscribe" value="One-Click">'
        "<button type=submit>Unsubscribe</button></form>",
    )


@router.post("/unsubscribe/{token}", summary="Unsubscribe: RFC 8058 one-click POST")
async def unsubscribe(token: str, request: Request) -> HTMLResponse:
    body = (await request.body()).decode("utf-8", "replace")
    one_click = _ONE_CLICK in body.replace("\r", "").split("\n") or _ONE_CLICK in body.split("&")
    if not one_click:
        return _page(
            "Not unsubscribed",
            f"<p>The request must carry <code>{_ONE_CLICK}</code> (RFC 8058).</p>",
            400,
        )
    answer, found = service(request).unsubscribe(token, "one_click")
    if answer is not Answer.OK or found is None:
        return _page("Link not valid", _FORGED, int(answer))
    return _page(
        "Unsubscribed",
        f"<p>You will get no more emails about <strong>{html.escape(found.category)}</strong>.</p>",
    )
