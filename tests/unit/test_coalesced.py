"""`Coalesced`: one call in flight, requests meanwhile folded into one more call after it."""

from __future__ import annotations

import asyncio

from serve_app.jobs.actor import Coalesced


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_requests_during_a_call_become_exactly_one_more_call() -> None:
    started: list[asyncio.Event] = []
    release = asyncio.Event()

    async def call() -> None:
        started.append(asyncio.Event())
        await release.wait()

    wake = Coalesced(call)
    wake.request()
    await _settle()
    assert len(started) == 1
    for _ in range(50):  # 50 submits commit while the first wake is in flight
        wake.request()
    await _settle()
    assert len(started) == 1
    release.set()
    await _settle()
    assert len(started) == 2  # one more: the first may have been served before the commits
    await _settle()
    assert len(started) == 2


async def test_a_failing_or_hanging_call_does_not_stop_later_requests() -> None:
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("tracker restarting")
        if calls == 2:
            await asyncio.sleep(10)

    wake = Coalesced(call, timeout_s=0.05)
    wake.request()
    await _settle()
    wake.request()
    await asyncio.sleep(0.2)  # the second call timed out
    wake.request()
    await _settle()
    assert calls == 3
