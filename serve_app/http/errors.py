"""The one place where exceptions become HTTP responses: `{"error": {"code", "message"}}`."""

from __future__ import annotations

import json
import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from serve_app.errors import BackendUnavailable, BadRequest, ServiceError
from serve_app.http.schemas import StreamErrorDetail
from serve_app.stores.errors import StoreUnavailable

logger = logging.getLogger("ray.serve")

_STATUS_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
}


def validation_summary(exc: ValidationError) -> str:
    """The first few problems of a pydantic error, as `field: message`."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])


# A backend outage says when to come back: about when the breaker probes again.
DEFAULT_RETRY_AFTER_S = 1


def _headers(exc: ServiceError) -> dict[str, str]:
    """The error's headers; a 503 `backend_unavailable` always carries `Retry-After`."""
    if not isinstance(exc, BackendUnavailable) or "Retry-After" in exc.headers:
        return exc.headers
    seconds = DEFAULT_RETRY_AFTER_S
    cause: BaseException | None = exc.__cause__
    while cause is not None:
        hinted = getattr(cause, "retry_after_s", None)  # stores.BackendDown: the breaker's
        if isinstance(hinted, int | float):
            seconds = max(1, math.ceil(hinted))
            break
        cause = cause.__cause__
    return {**exc.headers, "Retry-After": str(seconds)}


def unavailable(exc: StoreUnavailable) -> BackendUnavailable:
    """A store outage that reached the HTTP layer unmapped."""
    error = BackendUnavailable(f"storage unavailable: {exc}")
    error.__cause__ = exc
    return error


def error_response(exc: ServiceError) -> JSONResponse:
    headers = _headers(exc)
    return JSONResponse(exc.to_body(), status_code=exc.status, headers=headers or None)


def _service_error(exc: BaseException) -> ServiceError | None:
    """Find a ServiceError behind Ray wrappers and FastAPI's body-parsing wrapper."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 5:
        if isinstance(current, ServiceError) and hasattr(current, "message"):
            return current
        cause = getattr(current, "cause", None)  # ray.exceptions.RayTaskError
        if isinstance(cause, ServiceError):
            return cause
        current = current.__cause__
        seen += 1
    return None


def event_error(exc: BaseException, event_id: str | None = None) -> StreamErrorDetail:
    """The `error` of an SSE or realtime error event: OpenAI's type, our stable code.

    Anything that is not a `ServiceError` is logged and reported as an internal error.
    """
    found = _service_error(exc)
    if found is None:
        logger.error("unhandled error in a stream", exc_info=exc)
        found = ServiceError("internal error; the failure was logged")
    if found.status == 429:
        kind = "rate_limit_error"
    elif found.status in (401, 403):
        kind = "authentication_error"
    elif found.status < 500:
        kind = "invalid_request_error"
    else:
        kind = "server_error"
    return StreamErrorDetail(type=kind, code=found.code, message=found.message, event_id=event_id)


def install_error_handlers(app: FastAPI) -> None:
    """The single place where exceptions become HTTP responses."""

    @app.exception_handler(ServiceError)
    async def on_service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(_service_error(exc) or exc)

    @app.exception_handler(StoreUnavailable)
    async def on_store_unavailable(_: Request, exc: StoreUnavailable) -> JSONResponse:
        return error_response(unavailable(exc))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
            problems.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        return error_response(BadRequest("invalid request: " + "; ".join(problems)))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        inner = _service_error(exc)
        if inner is not None:
            return error_response(inner)
        error = ServiceError(str(exc.detail))
        error.status = exc.status_code
        error.code = _STATUS_CODES.get(exc.status_code, "http_error")
        return error_response(error)

    @app.exception_handler(Exception)
    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        inner = _service_error(exc)
        if inner is not None:
            return error_response(inner)
        logger.exception("unhandled error", exc_info=exc)
        return error_response(ServiceError("internal error; the failure was logged"))


def _json_headers(exc: ServiceError, body: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in _headers(exc).items()),
    ]


async def send_json(send: Send, exc: ServiceError) -> None:
    body = json.dumps(exc.to_body()).encode()
    headers = [*_json_headers(exc, body), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_websocket_denial(
    scope: Scope, receive: Receive, send: Send, exc: ServiceError
) -> None:
    """Refuse a WebSocket handshake: the JSON error as the HTTP response where the server
    supports that (ASGI `websocket.http.response`, as uvicorn does), else a close (403)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008, "reason": exc.message[:120]})
        return
    body = json.dumps(exc.to_body()).encode()
    await send(
        {
            "type": "websocket.http.response.start",
            "status": exc.status,
            "headers": _json_headers(exc, body),
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})
