"""API keys and tenants: `Authorization: Bearer ws_…` → `Principal(tenant, key_id, limits)`.

Keys are random tokens shown once at creation; the job store keeps only their SHA-256.
A request is authenticated from its headers alone (in `serve_app.http.middleware.AccessMiddleware`),
before any body is read, and every job, upload and result is scoped to the tenant found here.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from serve_app.config import AuthConfig, RateLimitConfig, RateLimitSettings
from serve_app.errors import BackendUnavailable, Unauthorized
from serve_app.stores import errors as store_errors
from serve_app.stores.job_store import JobStore
from serve_app.stores.records import ApiKey

KEY_PREFIX = "ws_"
# Longer tokens are refused before hashing: nothing we issue is that long.
_MAX_TOKEN_CHARS = 256
_MAX_CACHED_KEYS = 10_000
# With a stale entry to fall back on, wait no longer for the store: the request's own store
# call may still wait `pool_timeout_s` (1 s) after it, and the pair must answer within 2 s.
# A lookup that answers later still drops a revoked key from the cache (`_settled`).
_STALE_WAIT_S = 0.5
ANONYMOUS_KEY_ID = "anonymous"
# One message for a missing, malformed, unknown or revoked key: no oracle for key states.
UNAUTHORIZED_MESSAGE = "missing or invalid API key"


def generate_key() -> str:
    """A new random key (256 bits): `ws_` + URL-safe base64."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """What the job store keeps: the hex SHA-256 of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(store: JobStore, tenant: str, name: str) -> tuple[str, ApiKey]:
    """Create and store a key; returns the plaintext (shown once, never stored) and its row."""
    key = generate_key()
    return key, store.create_api_key(tenant, hash_key(key), name)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant that owns their data, the key used and its limits."""

    tenant: str
    key_id: str
    key_name: str
    limits: RateLimitSettings


def unauthorized() -> Unauthorized:
    return Unauthorized(UNAUTHORIZED_MESSAGE, headers={"WWW-Authenticate": "Bearer"})


@dataclass
class _Cached:
    key: ApiKey
    verified: float  # clock() when the store last confirmed it


@dataclass
class Authenticator:
    """Verifies Bearer tokens against the hashed keys in the job store.

    With `config.enabled` False every request is the anonymous principal of
    `config.default_tenant`. Verified keys are cached per replica for `key_cache_s`.
    While the store is down, a key verified within `key_stale_s` is served from that cache.
    """

    config: AuthConfig
    limits: RateLimitConfig
    store: JobStore | None = None
    clock: Callable[[], float] = time.monotonic
    _cache: dict[str, _Cached] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.config.enabled and self.store is None:
            raise ValueError("auth.enabled needs a job store to look keys up in")

    def anonymous(self) -> Principal:
        tenant = self.config.default_tenant
        return Principal(
            tenant=tenant,
            key_id=ANONYMOUS_KEY_ID,
            key_name=ANONYMOUS_KEY_ID,
            limits=self.limits.limits_for(ANONYMOUS_KEY_ID, ANONYMOUS_KEY_ID, tenant),
        )

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal for an `Authorization` header value; raises Unauthorized (401)."""
        if not self.config.enabled:
            return self.anonymous()
        token = _bearer_token(authorization)
        if token is None:
            raise unauthorized()
        digest = hash_key(token)
        key = self._cached(digest, self.config.key_cache_s)
        if key is None:
            key = await self._verify(digest)
        return Principal(
            tenant=key.tenant,
            key_id=key.id,
            key_name=key.name,
            limits=self.limits.limits_for(key.id, key.name, key.tenant),
        )

    async def _verify(self, digest: str) -> ApiKey:
        """Look the key up; while the store is down or slow, a recently verified key comes
        from the cache (waiting at most `_STALE_WAIT_S` for the store)."""
        assert self.store is not None
        stale = self._cached(digest, self.config.key_stale_s)
        lookup = asyncio.ensure_future(self.store.guard.run(self._lookup, digest))
        try:
            if stale is None:
                key = await lookup
            else:
                key = await asyncio.wait_for(asyncio.shield(lookup), _STALE_WAIT_S)
        except (store_errors.StoreError, TimeoutError) as exc:
            lookup.add_done_callback(self._settled(digest))
            if stale is None:
                raise BackendUnavailable("the key store is unavailable; retry") from exc
            return stale
        if key is None:
            raise unauthorized()
        self._remember(digest, key)
        return key

    def _settled(self, digest: str) -> Callable[[asyncio.Future[ApiKey | None]], None]:
        """A late lookup still refreshes (or, for a revoked key, drops) the cached entry."""

        def settle(done: asyncio.Future[ApiKey | None]) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            key = done.result()
            if key is None:
                self._cache.pop(digest, None)
            else:
                self._remember(digest, key)

        return settle

    def _lookup(self, digest: str) -> ApiKey | None:
        assert self.store is not None
        key = self.store.get_api_key_by_hash(digest)
        # The index lookup found the row by hash; compare again in constant time so the
        # decision never depends on how many leading characters matched.
        if key is None or not hmac.compare_digest(key.key_sha256, digest):
            return None
        return key

    def _cached(self, digest: str, max_age_s: float) -> ApiKey | None:
        """The key if verified less than `max_age_s` ago (entries live for the stale window)."""
        entry = self._cache.get(digest)
        if entry is None:
            return None
        if not hmac.compare_digest(entry.key.key_sha256, digest):
            self._cache.pop(digest, None)
            return None
        age = self.clock() - entry.verified
        if age >= max(self.config.key_cache_s, self.config.key_stale_s):
            self._cache.pop(digest, None)
        return entry.key if age < max_age_s else None

    def _remember(self, digest: str, key: ApiKey) -> None:
        if self.config.key_cache_s <= 0:
            return
        if len(self._cache) >= _MAX_CACHED_KEYS:
            self._cache.clear()  # rare; a refill costs one lookup per active key
        self._cache[digest] = _Cached(key, self.clock())


def _bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > _MAX_TOKEN_CHARS:
        return None
    return token
