"""Raw ASGI middlewares: access control and upload limits, both before any body is read."""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.errors import BackendUnavailable, PayloadTooLarge, ServiceError
from serve_app.http.access import Access
from serve_app.http.docs import ASSET_PATHS
from serve_app.http.errors import send_json, send_websocket_denial
from serve_app.security.keys import Authenticator
from serve_app.security.ratelimit import RateLimiter

logger = logging.getLogger("ray.serve")


# Routes anyone may call (probes and docs); every other path needs a key when auth is on.
PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
    | ASSET_PATHS
)


class AccessMiddleware:
    """Authenticates and rate-limits every non-public request from its headers alone.

    Runs before the body is read, so a caller without a valid key cannot make the service
    buffer an upload; the resulting `Access` is left in the scope for `get_access`.
    WebSocket handshakes (`/v1/realtime`) are checked the same way, before they are accepted;
    a refused one gets the JSON error as its HTTP response (or a close where the server
    cannot send one, which clients see as 403).
    """

    def __init__(self, app: ASGIApp, authenticator: Authenticator, limiter: RateLimiter) -> None:
        self.app = app
        self.authenticator = authenticator
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or _route_path(scope) in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        refusal: ServiceError | None = None
        try:
            principal = await self.authenticator.authenticate(_header(scope, b"authorization"))
            await self.limiter.hit(principal)
        except ServiceError as exc:
            refusal = exc
        except Exception as exc:  # never a bare 500 from the gate: log and say "retry"
            logger.exception("access check failed", exc_info=exc)
            refusal = BackendUnavailable("access check unavailable; retry")
        if refusal is not None:
            if kind == "websocket":
                await send_websocket_denial(scope, receive, send, refusal)
            else:
                await send_json(send, refusal)
            return
        scope.setdefault("state", {})["access"] = Access(principal, self.limiter)
        await self.app(scope, receive, send)


def _route_path(scope: Scope) -> str:
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path.rstrip("/") or "/"


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", []):
        if name.lower() == wanted:
            return value.decode("latin-1")
    return None


class UploadLimitMiddleware:
    """Refuses bodies over `max_bytes` while they stream in, before they are buffered."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(f"request body exceeds the limit of {self.max_bytes} bytes")
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await send_json(send, too_large)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except PayloadTooLarge:
            if started:
                raise
            await send_json(send, too_large)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
