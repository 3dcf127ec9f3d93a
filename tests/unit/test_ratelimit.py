"""In-process token buckets and concurrency counters (the fallback without Redis)."""

from __future__ import annotations

import pytest

from serve_app.config import RateLimitConfig, RateLimitSettings
from serve_app.errors import RateLimited
from serve_app.security.keys import Principal
from serve_app.security.ratelimit import LocalBuckets, LocalSlots, RateLimiter, rate_limited


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_starts_full_then_refills_at_the_rate():
    clock = FakeClock()
    buckets = LocalBuckets(clock)
    assert all(buckets.take("k", rate=2.0, capacity=3).allowed for _ in range(3))
    refused = buckets.take("k", rate=2.0, capacity=3)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(0.5)
    clock.now += 0.5
    assert buckets.take("k", rate=2.0, capacity=3).allowed
    clock.now += 100  # idling never banks more than the capacity
    assert sum(buckets.take("k", rate=2.0, capacity=3).allowed for _ in range(10)) == 3


def test_bucket_admits_at_most_capacity_plus_rate_times_t():
    clock = FakeClock()
    buckets = LocalBuckets(clock)
    passed = 0
    for _ in range(1000):  # 1000 attempts spread over 10 s
        passed += buckets.take("k", rate=5.0, capacity=10).allowed
        clock.now += 0.01
    assert passed <= 10 + 5.0 * 10 + 1


def test_buckets_are_per_key():
    buckets = LocalBuckets(FakeClock())
    assert buckets.take("a", rate=1.0, capacity=1).allowed
    assert not buckets.take("a", rate=1.0, capacity=1).allowed
    assert buckets.take("b", rate=1.0, capacity=1).allowed


def test_slots_count_per_key():
    slots = LocalSlots()
    assert slots.acquire("k", 2) and slots.acquire("k", 2)
    assert not slots.acquire("k", 2)
    assert slots.acquire("other", 2)
    slots.release("k")
    assert slots.acquire("k", 2)


def test_rate_limited_error_carries_a_whole_retry_after():
    error = rate_limited("slow down", 0.2)
    assert error.status == 429 and error.code == "rate_limited"
    assert error.headers == {"Retry-After": "1"}
    assert rate_limited("slow down", 2.1).headers["Retry-After"] == "3"


def _principal(**limits) -> Principal:
    return Principal("t", "key-id", "key-name", RateLimitSettings(**limits))


async def test_disabled_limiter_lets_everything_through():
    limiter = RateLimiter(RateLimitConfig(), "redis://127.0.0.1:1/0")
    principal = _principal(burst=1, max_concurrent=1)
    for _ in range(5):
        await limiter.hit(principal)
    async with limiter.slot(principal), limiter.slot(principal):
        pass


async def test_enabled_limiter_without_redis_uses_local_state():
    clock = FakeClock()
    limiter = RateLimiter(RateLimitConfig(enabled=True), None, clock=clock)
    principal = _principal(requests_per_s=1.0, burst=2, max_concurrent=1)
    await limiter.hit(principal)
    await limiter.hit(principal)
    with pytest.raises(RateLimited) as refused:
        await limiter.hit(principal)
    assert refused.value.headers["Retry-After"] == "1"
    async with limiter.slot(principal):
        with pytest.raises(RateLimited):
            async with limiter.slot(principal):
                pass
    async with limiter.slot(principal):  # released on exit
        pass
    assert not limiter.shared


def test_per_key_overrides_match_id_then_name_then_tenant():
    special = RateLimitSettings(burst=1)
    by_tenant = RateLimitSettings(burst=2)
    config = RateLimitConfig(per_key={"key-name": special, "tenant-x": by_tenant})
    assert config.limits_for("key-id", "key-name", "tenant-x") is special
    assert config.limits_for("other", "other", "tenant-x") is by_tenant
    assert config.limits_for("other", "other", "other") == RateLimitSettings()
