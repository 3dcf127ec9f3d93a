"""The store breaker and executor (issue 16): fail fast while down, probe, close on success;
keys served from the stale cache while the store is down; 503s carry Retry-After."""

from __future__ import annotations

import asyncio
import threading

import pytest

from serve_app.config import AuthConfig, RateLimitConfig
from serve_app.errors import BackendUnavailable, Unauthorized
from serve_app.http.errors import error_response, unavailable
from serve_app.security.keys import Authenticator, create_key
from serve_app.stores import BackendDown, BackendGuard, CircuitBreaker, StoreTuning
from serve_app.stores.errors import NotFound, StoreUnavailable
from serve_app.stores.sqlite_store import SqliteJobStore


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _fail(breaker: CircuitBreaker) -> None:
    with pytest.raises(StoreUnavailable), breaker.guard():
        raise StoreUnavailable("down")


def test_breaker_opens_after_failures_probes_once_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker("db", failures=2, open_s=1.0, clock=clock)
    _fail(breaker)
    assert not breaker.is_open  # one failure is not an outage
    _fail(breaker)
    assert breaker.refusing()
    with pytest.raises(BackendDown) as refused:
        breaker.before()
    assert refused.value.retry_after_s == 1
    clock.now += 1.0
    breaker.before()  # the probe
    with pytest.raises(BackendDown):
        breaker.before()  # everyone else still fails fast while it runs
    breaker.succeeded()
    assert not breaker.is_open
    breaker.before()


def test_answers_are_not_failures_and_a_failed_probe_reopens() -> None:
    clock = Clock()
    breaker = CircuitBreaker("db", failures=1, open_s=1.0, clock=clock)
    with pytest.raises(NotFound), breaker.guard():
        raise NotFound("no such job")
    assert not breaker.is_open
    _fail(breaker)
    clock.now += 1.0
    _fail(breaker)  # the probe failed
    assert breaker.refusing()


async def test_guard_runs_on_its_own_threads_and_refuses_while_open() -> None:
    guard = BackendGuard("db", StoreTuning(executor_workers=1))
    try:
        name = await guard.run(lambda: threading.current_thread().name)
        assert name.startswith("store-db")
        guard.breaker.failed(StoreUnavailable("x"))
        guard.breaker.failed(StoreUnavailable("x"))
        ran = []
        with pytest.raises(BackendDown):
            await guard.run(ran.append, 1)
        assert ran == []  # refused before taking a thread
    finally:
        guard.close()


async def test_guard_refuses_past_max_pending() -> None:
    guard = BackendGuard("db", StoreTuning(executor_workers=1, max_pending=1))
    release = threading.Event()
    try:
        first = asyncio.ensure_future(guard.run(release.wait, 5))
        await asyncio.sleep(0.05)
        with pytest.raises(BackendDown):
            await guard.run(lambda: None)
        release.set()
        assert await first is True
    finally:
        guard.close()


def _stale_auth(store: SqliteJobStore) -> tuple[Clock, Authenticator]:
    """Keys trusted for 1 s, served stale for 60 s while the store is down."""
    store.migrate()
    clock = Clock()
    config = AuthConfig(enabled=True, key_cache_s=1.0, key_stale_s=60.0)
    return clock, Authenticator(config, RateLimitConfig(), store, clock=clock)


async def test_verified_keys_come_from_the_stale_cache_while_the_store_is_down() -> None:
    store = SqliteJobStore(":memory:")
    clock, auth = _stale_auth(store)
    key, _ = create_key(store, "acme", "ci")
    other, _ = create_key(store, "acme", "never-seen")
    known = await auth.authenticate(f"Bearer {key}")
    clock.now += 5  # past key_cache_s: the store is asked again, and it is down
    for _ in range(2):
        store.guard.breaker.failed(StoreUnavailable("down"))
    again = await auth.authenticate(f"Bearer {key}")
    assert again.key_id == known.key_id
    with pytest.raises(BackendUnavailable):
        await auth.authenticate(f"Bearer {other}")
    clock.now += 60  # past key_stale_s: no longer trusted
    with pytest.raises(BackendUnavailable):
        await auth.authenticate(f"Bearer {key}")
    store.close()


def test_store_outages_map_to_503_with_retry_after() -> None:
    response = error_response(unavailable(BackendDown("postgres is unavailable", 3.0)))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    assert b"backend_unavailable" in response.body
    plain = error_response(BackendUnavailable("storage unavailable"))
    assert plain.headers["retry-after"] == "1"


class _SlowKeys(SqliteJobStore):
    """Key lookups wait for `release`: a store that hangs without failing."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.release = threading.Event()
        self.slow = False

    def get_api_key_by_hash(self, key_sha256: str):  # type: ignore[no-untyped-def]
        if self.slow:
            self.release.wait(10)
        return super().get_api_key_by_hash(key_sha256)


async def test_a_hung_store_costs_a_known_key_half_a_second_and_a_late_refusal_sticks() -> None:
    store = _SlowKeys()
    clock, auth = _stale_auth(store)
    key, row = create_key(store, "acme", "ci")
    await auth.authenticate(f"Bearer {key}")
    clock.now += 5
    store.slow = True
    started = asyncio.get_running_loop().time()
    assert (await auth.authenticate(f"Bearer {key}")).key_id == row.id
    # Half the 2 s answer budget: the request's own store call may take the pool's 1 s after.
    assert asyncio.get_running_loop().time() - started < 0.9
    store.revoke_api_key(row.id, "acme")
    store.release.set()  # the hung lookup answers late: the key is revoked now
    for _ in range(50):
        if not auth._cache:
            break
        await asyncio.sleep(0.02)
    assert not auth._cache  # dropped, not served stale for the next minute
    store.slow = False
    with pytest.raises(Unauthorized):
        await auth.authenticate(f"Bearer {key}")
    store.close()
