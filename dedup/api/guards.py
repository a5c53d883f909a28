"""What stands between a request and the store: JSON errors, the body size limit and deadline, the API key."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
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


class ErrorDetail(BaseModel):
    """What went wrong: a stable machine-readable code and a message for people."""

    code: str
    message: str


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


#: What each error status means in this API, as the OpenAPI document describes it.
ERROR_STATUSES = {
    400: "A missing, blank or invalid field or parameter.",
    401: "A missing or wrong X-API-Key header (when the server has a key and the endpoint needs it).",
    404: "No such product, image, report or route.",
    408: "The request body stalled (nothing sent for the idle deadline, or not complete by the total one).",
    409: "The stored report was written by an older version; run `dedup report` again.",
    413: "The upload is over the byte limit.",
    422: "The upload is not a usable image (empty, not an image, truncated, corrupt, or over the pixel limit).",
    503: "Too many uploads in progress (with Retry-After), or the store or model is unavailable.",
}


#: The catch-all every operation documents: any other client error (405 for a method the path does not take)
#: carries the same body. It also keeps FastAPI from documenting its own 422 body, which this API never sends.
OTHER_CLIENT_ERRORS = "4XX"


def error_responses(*statuses: int, success: dict[str, Any] | None = None) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entries of ``statuses`` and of :data:`OTHER_CLIENT_ERRORS`, each with the error
    body's schema; ``success`` describes the 200 answer when the route's return type does not."""
    entries: dict[int | str, dict[str, Any]] = {200: success} if success is not None else {}
    entries.update({status: {"model": ErrorBody, "description": ERROR_STATUSES[status]} for status in statuses})
    entries[OTHER_CLIENT_ERRORS] = {"model": ErrorBody, "description": "Any other client error, with the same body."}
    return entries


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
    await _send_error(send, 413, "upload_too_large", message, [(b"connection", b"close")])


class BodyDeadline:
    """ASGI middleware bounding how long a request body may take and how many are read at once.

    A client that declares a body and then sends nothing (or trickles it) would otherwise hold its connection, a
    worker slot and its buffers for as long as it likes; a few dozen of them starve the server. So:

    - every wait for the next piece of a body ends after ``idle_s`` seconds, and the whole body must arrive
      within ``total_s``; past either, the request is answered 408 (``request_timeout``) and its connection
      closed, whatever the route was doing with the partial body;
    - at most ``max_in_flight`` requests with a body are served at once, and at most ``max_per_client`` from
      one client address; a request over either cap is answered 503 (``busy``, with ``Retry-After``) before
      any of its body is read. Requests without a body (GET, HEAD) are not counted: a flood of stalled
      uploads never blocks the page, thumbnails or health checks, and one client's flood never uses the
      slots of the others.
    """

    def __init__(self, app: ASGIApp, idle_s: float, total_s: float, max_in_flight: int, max_per_client: int) -> None:
        self.app = app
        self.idle_s, self.total_s = idle_s, total_s
        self.max_in_flight, self.max_per_client = max_in_flight, max_per_client
        self.in_flight = 0
        self.by_client: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        client = str((scope.get("client") or ("unknown",))[0])
        if self.in_flight >= self.max_in_flight or self.by_client.get(client, 0) >= self.max_per_client:
            await _send_error(
                send,
                503,
                "busy",
                "too many uploads in progress; try again shortly",
                [(b"retry-after", b"1"), (b"connection", b"close")],  # the unread body rules out keep-alive
            )
            return
        self.in_flight += 1
        self.by_client[client] = self.by_client.get(client, 0) + 1
        try:
            await self._serve(scope, receive, send)
        finally:
            self.in_flight -= 1
            left = self.by_client[client] - 1
            if left:
                self.by_client[client] = left
            else:
                del self.by_client[client]

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.total_s
        state = {"body_done": False, "late": False, "started": False}

        async def timed_receive() -> Message:
            if state["body_done"]:
                return await receive()  # after the body only a disconnect can come: no deadline
            wait = min(self.idle_s, deadline - loop.time())
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.0, wait))
            except TimeoutError:
                state["late"] = True
                raise _BodyTimeout(self.idle_s, self.total_s) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["body_done"] = True
            return message

        async def guarded_send(message: Message) -> None:
            if state["late"]:
                if not state["started"]:
                    # Whatever the framework made of the aborted read (a parse error, usually), it was a 408.
                    state["started"] = True
                    await _send_timeout(send, self.idle_s, self.total_s)
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except _BodyTimeout:
            if not state["started"]:
                state["started"] = True
                await _send_timeout(send, self.idle_s, self.total_s)


class _BodyTimeout(StarletteHTTPException):
    def __init__(self, idle_s: float, total_s: float) -> None:
        super().__init__(408, _timeout_message(idle_s, total_s))


def _timeout_message(idle_s: float, total_s: float) -> str:
    return f"the request body stalled: each part must arrive within {idle_s:g} s, the whole within {total_s:g} s"


async def _send_timeout(send: Send, idle_s: float, total_s: float) -> None:
    await _send_error(send, 408, "request_timeout", _timeout_message(idle_s, total_s), [(b"connection", b"close")])


async def _send_error(
    send: Send, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps(error_body(code, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
