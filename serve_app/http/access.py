"""Request-side access: the `Access` a route handler gets, as a FastAPI dependency."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import Scope

from serve_app.config import RateLimitSettings
from serve_app.security.keys import ANONYMOUS_KEY_ID, Principal
from serve_app.security.ratelimit import RateLimiter


@dataclass(frozen=True)
class Access:
    """What a route handler gets: the principal, and the limiter for its concurrency slot."""

    principal: Principal
    limiter: RateLimiter | None = None

    @property
    def tenant(self) -> str:
        return self.principal.tenant

    @property
    def max_active_jobs(self) -> int | None:
        enabled = self.limiter is not None and self.limiter.enabled
        return self.principal.limits.max_active_jobs if enabled else None

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the key's concurrency slots (429 when all are taken)."""
        if self.limiter is None:
            yield
            return
        async with self.limiter.slot(self.principal):
            yield


_bearer = HTTPBearer(auto_error=False, description="An API key from `whisper-serve keys create`.")
_FALLBACK = Access(
    Principal("default", ANONYMOUS_KEY_ID, ANONYMOUS_KEY_ID, RateLimitSettings()), None
)


async def get_access(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> Access:
    """FastAPI dependency: the `Access` that AccessMiddleware attached to the request.

    Async although it never awaits: FastAPI runs a plain `def` dependency in a worker
    thread, one extra thread hop (and GIL handoff) on every request for a dict lookup.

    The bearer parameter only documents the scheme in OpenAPI; the middleware already checked
    the header. Routers mounted without the middleware (unit tests) see the default tenant.
    """
    return scope_access(request.scope)


def scope_access(scope: Scope) -> Access:
    """The `Access` AccessMiddleware left in an HTTP or WebSocket scope (default tenant if none)."""
    access = scope.get("state", {}).get("access")
    return access if isinstance(access, Access) else _FALLBACK


AccessDep = Annotated[Access, Depends(get_access)]
