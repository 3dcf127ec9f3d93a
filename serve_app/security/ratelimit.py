"""Per-key rate limit (token bucket) and concurrency quota.

With `storage.redis_url` the state lives in Redis and is updated by Lua scripts (EVALSHA),
so every ingress replica shares one bucket per key and the check-and-take is atomic; Redis'
own clock is used, so replicas' clocks do not matter. Without Redis — or while it is
unreachable — each replica keeps its own in-process buckets: the limit then holds per replica
(N replicas let up to N times the budget through). A circuit breaker (`stores.CircuitBreaker`)
decides: one failure opens it for `_REDIS_RETRY_S`, then the next call probes Redis again.
A slot whose release could not reach Redis is released when Redis answers again, so an outage
leaves no slot behind (no 429s after recovery).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from serve_app.config import RateLimitConfig
from serve_app.errors import RateLimited
from serve_app.security.keys import Principal
from serve_app.stores.guard import CircuitBreaker

logger = logging.getLogger("ray.serve")

# KEYS[1] = bucket hash; ARGV = refill per second, capacity, cost. Returns {allowed, wait_ms}.
BUCKET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate / 1000)
local allowed = 0
local wait_ms = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait_ms = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity * 1000 / rate) + 1000)
return {allowed, wait_ms}
"""

# KEYS[1] = sorted set of slot tokens scored by expiry; ARGV = limit, token, ttl_ms.
SLOT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""

_MAX_LOCAL_KEYS = 50_000
_REDIS_RETRY_S = 1.0  # after a Redis failure, use local state this long before trying again
_MAX_ORPHANS = 10_000
_REDIS_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: float = 0.0


class LocalBuckets:
    """In-process token buckets (one per key), for one replica."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, rate: float, capacity: float, cost: float = 1.0) -> Decision:
        now = self.clock()
        tokens, stamp = self._buckets.pop(key, (capacity, now))
        tokens = min(capacity, tokens + max(0.0, now - stamp) * rate)
        if tokens >= cost:
            decision = Decision(True)
            tokens -= cost
        else:
            decision = Decision(False, (cost - tokens) / rate)
        self._buckets[key] = (tokens, now)  # most recently used last
        while len(self._buckets) > _MAX_LOCAL_KEYS:
            self._buckets.popitem(last=False)
        return decision


class LocalSlots:
    """In-process concurrency counters, for one replica."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}

    def acquire(self, key: str, limit: int) -> bool:
        if self._held.get(key, 0) >= limit:
            return False
        self._held[key] = self._held.get(key, 0) + 1
        return True

    def release(self, key: str) -> None:
        left = self._held.get(key, 0) - 1
        if left > 0:
            self._held[key] = left
        else:
            self._held.pop(key, None)


class RateLimiter:
    """Enforces `RateLimitConfig` for principals; raises RateLimited (429 + Retry-After)."""

    def __init__(
        self,
        config: RateLimitConfig,
        redis_url: str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.clock = clock
        self.local = LocalBuckets(clock)
        self.local_slots = LocalSlots()
        self._redis: Any = None
        self._bucket_script: Any = None
        self._slot_script: Any = None
        self.breaker = CircuitBreaker("redis", failures=1, open_s=_REDIS_RETRY_S, clock=clock)
        self._orphans: list[tuple[str, str]] = []  # (slots key, token) still held in Redis
        if redis_url and config.enabled:
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis.from_url(
                redis_url,
                socket_timeout=_REDIS_TIMEOUT_S,
                socket_connect_timeout=_REDIS_TIMEOUT_S,
            )
            # register_script runs EVALSHA and loads the script again after a NOSCRIPT reply.
            self._bucket_script = self._redis.register_script(BUCKET_LUA)
            self._slot_script = self._redis.register_script(SLOT_LUA)

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    @property
    def shared(self) -> bool:
        """True while decisions come from Redis (shared by every replica)."""
        return self._redis is not None and not self.breaker.refusing()

    async def hit(self, principal: Principal) -> None:
        """Take one token from the principal's bucket or raise RateLimited."""
        if not self.enabled:
            return
        limits = principal.limits
        decision = await self._take(principal.key_id, limits.requests_per_s, limits.burst)
        if not decision.allowed:
            raise rate_limited("rate limit exceeded for this API key", decision.retry_after_s)

    @asynccontextmanager
    async def slot(self, principal: Principal) -> AsyncIterator[None]:
        """Hold one of the principal's `max_concurrent` slots for the duration of the block."""
        if not self.enabled:
            yield
            return
        release = await self._acquire_slot(principal.key_id, principal.limits.max_concurrent)
        if release is None:
            raise rate_limited("too many requests in flight for this API key", 1.0)
        try:
            yield
        finally:
            await release()

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    # ---- internals -------------------------------------------------------------------

    def _key(self, kind: str, key_id: str) -> str:
        return f"{self.config.redis_prefix}:{kind}:{key_id}"

    async def _take(self, key_id: str, rate: float, capacity: int) -> Decision:
        if self.shared:
            try:
                allowed, wait_ms = await self._bucket_script(
                    keys=[self._key("bucket", key_id)], args=[rate, capacity, 1]
                )
            except (RedisError, OSError) as exc:  # degrade to per-replica limits
                self._redis_failed(exc)
            else:
                await self._redis_ok()
                return Decision(bool(int(allowed)), int(wait_ms) / 1000)
        return self.local.take(key_id, rate, capacity)

    async def _acquire_slot(self, key_id: str, limit: int) -> Callable[[], Any] | None:
        if self.shared:
            token = uuid.uuid4().hex
            key = self._key("slots", key_id)
            ttl_ms = int(self.config.slot_ttl_s * 1000)
            try:
                taken = int(await self._slot_script(keys=[key], args=[limit, token, ttl_ms]))
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
            else:
                await self._redis_ok()
                if not taken:
                    return None

                async def release_shared() -> None:
                    try:
                        await self._redis.zrem(key, token)
                    except BaseException as exc:  # Redis down, or the caller cancelled
                        self._orphan(key, token)
                        if isinstance(exc, RedisError | OSError):
                            self._redis_failed(exc)
                        else:
                            raise

                return release_shared
        if not self.local_slots.acquire(key_id, limit):
            return None

        async def release_local() -> None:
            self.local_slots.release(key_id)

        return release_local

    def _redis_failed(self, exc: BaseException) -> None:
        if not self.breaker.is_open:
            logger.warning(
                "rate limiter: Redis unavailable (%s); per-replica limits until it answers",
                type(exc).__name__,
            )
        self.breaker.failed(exc)

    def _orphan(self, key: str, token: str) -> None:
        if len(self._orphans) < _MAX_ORPHANS:  # past that, slot_ttl_s expires them
            self._orphans.append((key, token))

    async def _redis_ok(self) -> None:
        """Redis answered: close the breaker and release the slots an outage left behind."""
        self.breaker.succeeded()
        while self._orphans:
            key, token = self._orphans.pop()
            try:
                await self._redis.zrem(key, token)
            except (RedisError, OSError) as exc:
                self._orphans.append((key, token))
                self._redis_failed(exc)
                return


def rate_limited(message: str, retry_after_s: float) -> RateLimited:
    seconds = max(1, math.ceil(retry_after_s))
    return RateLimited(f"{message}; retry in {seconds} s", headers={"Retry-After": str(seconds)})
