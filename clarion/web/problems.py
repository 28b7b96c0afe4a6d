"""Errors as RFC 9457 problem details (``application/problem+json``), naming the field.

Every error answer of the API has ``type``, ``title``, ``status``, ``detail``
and ``instance``; a validation error adds ``field`` (the first bad one, as
``notifications[2].title`` inside a list) and ``errors`` (each bad field with
its problem).
"""

from __future__ import annotations

import http
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from clarion.core.errors import NotFoundError, TemplateError, ValidationError

log = logging.getLogger("clarion.web")

PROBLEM_JSON = "application/problem+json"
#: Where a problem type is described: the README's section.
TYPE_BASE = "https://clarion.invalid/problems/"


class ProblemDetails(BaseModel):
    """RFC 9457 problem details, as every error answer carries them."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    field: str | None = None
    errors: list[dict[str, str]] | None = None


def documented(description: str) -> dict[str, Any]:
    return {
        "model": ProblemDetails,
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}},
    }


#: The error answers of the API routes, for the OpenAPI schema.
API_ERRORS: dict[int | str, dict[str, Any]] = {
    401: documented("no credential, an unknown or revoked key, a bad or expired token"),
    403: documented("the API key lacks the scope this route needs"),
    422: documented("a bad body, header or parameter; `field` names it"),
}


class Problem(Exception):
    """An error answer: raise it from a route."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind
        self.field = field
        self.headers = headers or {}
        self.extra = extra or {}


def problem_body(
    status: int,
    detail: str,
    instance: str,
    *,
    kind: str | None = None,
    field: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": TYPE_BASE + kind if kind else "about:blank",
        "title": http.HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    if field is not None:
        body["field"] = field
    body.update(extra or {})
    return body


def problem_response(
    request: Request,
    status: int,
    detail: str,
    *,
    kind: str | None = None,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    return JSONResponse(
        problem_body(status, detail, request.url.path, kind=kind, field=field, extra=extra),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def field_name(loc: Sequence[Any]) -> str:
    """A pydantic location (``body, notifications, 2, title``) as ``notifications[2].title``."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name or "body"


def validation_problem(request: Request, field: str, problem: str) -> JSONResponse:
    return problem_response(
        request,
        422,
        f"{field}: {problem}",
        kind="validation",
        field=field,
        extra={"errors": [{"field": field, "detail": problem}]},
    )


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as problem+json."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            request,
            exc.status,
            exc.detail,
            kind=exc.kind,
            field=exc.field,
            headers=exc.headers,
            extra=exc.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": field_name(e.get("loc", ())), "detail": str(e.get("msg", "invalid"))}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": "body", "detail": "invalid"}
        return problem_response(
            request,
            422,
            f"{first['field']}: {first['detail']}",
            kind="validation",
            field=first["field"],
            extra={"errors": errors},
        )

    @app.exception_handler(ValidationError)
    async def _clarion_invalid(request: Request, exc: ValidationError) -> JSONResponse:
        return validation_problem(request, exc.field, exc.problem)

    @app.exception_handler(TemplateError)
    async def _template(request: Request, exc: TemplateError) -> JSONResponse:
        return validation_problem(request, "template_data", str(exc))

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        text = str(exc)
        field = text.split(":", 1)[0] if ":" in text and " " not in text.split(":", 1)[0] else None
        return problem_response(request, 404, text, kind="not-found", field=field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(
            request, exc.status_code, str(exc.detail), headers=dict(exc.headers or {})
        )

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the log; the answer says nothing of the internals.
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem_response(request, 500, "unexpected error; see the server's log")
