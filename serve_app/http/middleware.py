"""Raw ASGI middlewares: access control and upload limits, both before any body is read."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.errors import BackendUnavailable, PayloadTooLarge, RequestTimeout, ServiceError
from serve_app.http.access import Access, scope_access
from serve_app.http.docs import ASSET_PATHS
from serve_app.http.errors import send_json, send_websocket_denial
from serve_app.pipeline.memory import trim_heap
from serve_app.security.keys import ANONYMOUS_KEY_ID, Authenticator
from serve_app.security.ratelimit import RateLimiter, rate_limited

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


_DRAIN_BYTES = 64 * 1024
# Bodies this large decode to arrays of several times their size (see `pipeline.memory`).
_TRIM_AFTER_BYTES = 4 * 2**20


class UploadLimitMiddleware:
    """Guards request bodies before they are buffered: over `max_bytes` → 413 (declared or
    counted while streaming), no bytes for `idle_timeout_s` → 408, more than `max_uploads`
    bodies streaming in for one key (one client address without auth) → 429. Bodiless requests
    (`/healthz`, `/readyz`, GETs) never count, so probes are never behind upload capacity."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        idle_timeout_s: float = 10.0,
        max_uploads: int = 32,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.idle_timeout_s = idle_timeout_s
        self.max_uploads = max_uploads
        self._uploads: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(f"request body exceeds the limit of {self.max_bytes} bytes")
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await send_json(send, too_large)
            return
        who = _uploader(scope)
        if self._uploads.get(who, 0) >= self.max_uploads:
            if declared is not None and declared <= _DRAIN_BYTES:
                await self._drain(receive)  # else the close may reset the answer away
            await send_json(send, rate_limited("too many uploads in flight for this client", 1.0))
            return
        self._uploads[who] = self._uploads.get(who, 0) + 1
        held = True

        def release() -> None:
            # At the body's end: the cap is on bodies streaming in, not on requests being
            # processed (the rate limiter's concurrency quota caps those).
            nonlocal held
            if held:
                held = False
                left = self._uploads.pop(who) - 1
                if left > 0:
                    self._uploads[who] = left

        try:
            received = await self._guarded(scope, receive, send, too_large, release)
        finally:
            release()
        if received >= _TRIM_AFTER_BYTES:
            await asyncio.to_thread(trim_heap)

    async def _drain(self, receive: Receive) -> None:
        """Read and drop a small body, so that closing after the answer sends no RST."""
        try:
            async with asyncio.timeout(self.idle_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] != "http.request" or not message.get("more_body"):
                        return
        except TimeoutError:
            return

    async def _guarded(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        too_large: PayloadTooLarge,
        body_read: Callable[[], None],
    ) -> int:
        """Runs the app; returns how many body bytes it read."""
        received = 0
        body_done = False
        started = False
        idle = RequestTimeout(f"no request body bytes for {self.idle_timeout_s:g} s")

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # after the body: waits for a disconnect (SSE), no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.idle_timeout_s)
            except TimeoutError:
                raise idle from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large
                body_done = not message.get("more_body", False)
                if body_done:
                    body_read()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except (PayloadTooLarge, RequestTimeout) as exc:
            if started:
                raise
            await send_json(send, exc)
        return received


def _has_body(scope: Scope) -> bool:
    declared = _content_length(scope)
    if declared is not None:
        return declared > 0
    return any(name == b"transfer-encoding" for name, _ in scope.get("headers", []))


def _uploader(scope: Scope) -> str:
    """Whose uploads count together: the API key, or the client address without auth."""
    principal = scope_access(scope).principal
    if principal.key_id != ANONYMOUS_KEY_ID:
        return f"key:{principal.key_id}"
    client = scope.get("client") or ("?", 0)
    return f"addr:{client[0]}"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
