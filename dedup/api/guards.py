"""What stands between a request and the store: JSON errors, the body size limit, the API key."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dedup.errors import DedupError, ImageError, ModelError, StoreError

log = logging.getLogger(__name__)

#: Room for multipart boundaries, part headers and small form fields on top of the file bytes.
MULTIPART_OVERHEAD = 64 * 1024


class ApiError(Exception):
    """An error answer: HTTP status, a stable machine-readable code and a message for people."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """The JSON every error answer carries: ``{"error": {"code": ..., "message": ...}}``."""
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error answer as a response."""
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def too_large(limit: int) -> ApiError:
    """The 413 answer for an upload over ``limit`` bytes."""
    return ApiError(413, "upload_too_large", f"the upload is over the {limit:,}-byte limit")


def image_error(exc: ImageError) -> ApiError:
    """The 422 answer for bytes that are not a usable image (the decoder's reason, not the client's file name)."""
    # A decoded size over the pixel limit is a decompression-bomb guard, unlike a 413 on the byte count.
    code = "too_many_pixels" if exc.kind == "too_large" else exc.kind
    return ApiError(422, code, exc.reason)


def check_api_key(request: Request, expected: str) -> None:
    """Raise a 401 ApiError unless the ``X-API-Key`` header equals ``expected`` (compared in constant time)."""
    given = request.headers.get("x-api-key", "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "unauthorized", "a valid X-API-Key header is required for this endpoint")


def no_blank_fields(*names: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency refusing a form whose ``names`` fields are present but empty, with a 400.

    FastAPI reads an empty form value as a missing one, so ``k=`` silently became the default ``k``; a
    client that sent the field meant something, and should hear that it was not understood.
    """

    async def check(request: Request) -> None:
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            return  # no form: the route's own validation answers
        form = await request.form()  # parsed once: the route's own fields read the same cached form
        values = {n: form.get(n) for n in names}
        blank = [n for n, v in values.items() if isinstance(v, str) and not v.strip()]
        if blank:
            raise ApiError(400, "invalid_field", "; ".join(f"{n}: must not be blank" for n in blank))

    return check


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error with the JSON error body and the right status."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "X-API-Key"} if exc.status == 401 else None
        return error_response(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        missing = [_field(e) for e in errors if e.get("type") == "missing"]
        if missing:
            return error_response(400, "missing_field", "missing form field(s): " + ", ".join(missing))
        parts = [f"{_field(e)}: {e.get('msg', 'invalid')}" for e in errors]
        return error_response(400, "invalid_field", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "upload_too_large"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(DedupError)
    async def _dedup(request: Request, exc: DedupError) -> JSONResponse:
        # ImageError never gets here (routes turn it into a 422); these are the server's own troubles.
        log.error("%s %s: %s", request.method, request.url.path, exc.message)
        if isinstance(exc, StoreError | ModelError):
            return error_response(503, "unavailable", exc.message)
        return error_response(500, "internal", exc.message)


def _field(error: object) -> str:
    loc = error.get("loc", ()) if isinstance(error, dict) else ()
    names = [str(part) for part in loc if part not in ("body", "query", "path", "header")]
    return ".".join(names) or "request"


class BodyLimit:
    """ASGI middleware refusing request bodies over a per-path byte limit with a JSON 413.

    ``limit_for`` gives a path's body limit (None: unlimited); the answer names ``upload_limit``, the
    per-file limit people know about (the body limit adds room for multipart overhead).

    A declared ``Content-Length`` over the limit is refused before anything is read; a body without
    one (chunked) is counted as it streams in and cut off the moment it passes the limit, so a client
    cannot make the server buffer more than the limit by lying about the length.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int | None], upload_limit: int) -> None:
        self.app = app
        self.limit_for = limit_for
        self.message = too_large(upload_limit).message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limit_for(scope.get("path", "")) if scope["type"] == "http" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_413(send, self.message)
            return
        state = {"received": 0, "over": False, "started": False}

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["over"] = True
                    raise _BodyTooLarge(self.message)
            return message

        async def guarded_send(message: Message) -> None:
            if state["over"] and not state["started"]:
                # Whatever the framework made of the aborted read (a parse error, usually), it was a 413.
                state["started"] = True
                await _send_413(send, self.message)
                return
            if state["over"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            if not state["started"]:
                state["started"] = True
                await _send_413(send, self.message)


class _BodyTooLarge(StarletteHTTPException):
    def __init__(self, message: str) -> None:
        super().__init__(413, message)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(send: Send, message: str) -> None:
    body = json.dumps(error_body("upload_too_large", message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
