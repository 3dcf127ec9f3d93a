"""The Redis token bucket and concurrency slots, shared by several limiters (= replicas)."""

from __future__ import annotations

import asyncio
import time

import pytest

from serve_app.config import RateLimitConfig, RateLimitSettings
from serve_app.errors import RateLimited
from serve_app.security.keys import Principal
from serve_app.security.ratelimit import RateLimiter
from tests.fixtures.processes import free_port

pytestmark = pytest.mark.integration


def _principal(**limits) -> Principal:
    return Principal("tenant", "key-1", "key-one", RateLimitSettings(**limits))


def _config(**overrides) -> RateLimitConfig:
    return RateLimitConfig.model_validate({"enabled": True, **overrides})


async def _allowed(limiter: RateLimiter, principal: Principal) -> bool:
    try:
        await limiter.hit(principal)
    except RateLimited as exc:
        assert int(exc.headers["Retry-After"]) >= 1
        return False
    return True


async def test_two_replicas_share_one_bucket_within_the_bound(redis_url):
    import redis

    principal = _principal(requests_per_s=5.0, burst=8)
    replicas = [RateLimiter(_config(), redis_url) for _ in range(2)]
    passed = 0
    start = time.monotonic()
    while time.monotonic() - start < 2.0:
        results = await asyncio.gather(*(_allowed(r, principal) for r in replicas))
        passed += sum(results)
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - start
    assert 8 <= passed <= 8 + 5.0 * elapsed + 1, (passed, elapsed)
    assert all(r.shared for r in replicas)
    with redis.Redis.from_url(redis_url) as client:
        assert int(client.info("commandstats")["cmdstat_evalsha"]["calls"]) > 0
    for replica in replicas:
        await replica.close()


async def test_the_bucket_is_atomic_under_a_burst(redis_url):
    principal = _principal(requests_per_s=0.001, burst=10)  # no refill during the test
    replicas = [RateLimiter(_config(), redis_url) for _ in range(4)]
    results = await asyncio.gather(*(_allowed(replicas[i % 4], principal) for i in range(200)))
    assert sum(results) == 10
    for replica in replicas:
        await replica.close()


async def test_concurrency_slots_are_shared_and_expire(redis_url):
    principal = _principal(max_concurrent=2)
    a = RateLimiter(_config(slot_ttl_s=1.0), redis_url)
    b = RateLimiter(_config(slot_ttl_s=1.0), redis_url)
    async with a.slot(principal), b.slot(principal):
        with pytest.raises(RateLimited) as refused:
            async with a.slot(principal):
                pass
        assert refused.value.headers["Retry-After"] == "1"
    async with a.slot(principal), b.slot(principal):
        pass  # both released again
    # A holder that died without releasing: its slots free themselves after slot_ttl_s.
    await a._acquire_slot(principal.key_id, 2)
    await a._acquire_slot(principal.key_id, 2)
    assert await b._acquire_slot(principal.key_id, 2) is None
    await asyncio.sleep(1.2)
    assert await b._acquire_slot(principal.key_id, 2) is not None
    await a.close()
    await b.close()


async def test_unreachable_redis_falls_back_to_per_replica_limits():
    limiter = RateLimiter(_config(), f"redis://127.0.0.1:{free_port()}/0")
    principal = _principal(requests_per_s=0.001, burst=3)
    results = [await _allowed(limiter, principal) for _ in range(6)]
    assert results == [True, True, True, False, False, False]
    assert not limiter.shared
    async with limiter.slot(principal):
        pass
    await limiter.close()
