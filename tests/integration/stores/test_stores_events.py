"""One event-bus suite, run against the in-process bus and a real Redis."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest

from serve_app.stores import EventBus, RedisEventBus, StoreUnavailable, Subscription

# Explicit loop scope: the bus fixture and each test must share one event loop.
pytestmark = pytest.mark.asyncio(loop_scope="function")


async def take(events: Subscription, n: int, timeout_s: float = 10.0) -> list[dict]:
    async def collect() -> list[dict]:
        return [await anext(events) for _ in range(n)]

    return await asyncio.wait_for(collect(), timeout_s)


def channel() -> str:
    return f"job:{uuid.uuid4().hex}"


async def test_fan_out_to_two_subscribers_in_order(event_bus: EventBus) -> None:
    ch = channel()
    sent = [{"type": "progress", "done": i, "total": 5} for i in range(5)]
    async with event_bus.subscribe(ch) as first, event_bus.subscribe(ch) as second:
        for event in sent:
            await event_bus.publish(ch, event)
        assert await take(first, 5) == sent
        assert await take(second, 5) == sent


async def test_sync_publish_from_another_thread(event_bus: EventBus) -> None:
    ch = channel()
    async with event_bus.subscribe(ch) as events:
        worker = threading.Thread(
            target=lambda: [event_bus.publish_sync(ch, {"n": i}) for i in range(3)]
        )
        worker.start()
        await asyncio.to_thread(worker.join, 10)
        assert await take(events, 3) == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_channels_are_separate_and_late_subscribers_start_fresh(event_bus: EventBus) -> None:
    ch, other = channel(), channel()
    await event_bus.publish(ch, {"before": True})  # nobody listening: dropped, not an error
    async with event_bus.subscribe(ch) as events:
        await event_bus.publish(other, {"wrong": "channel"})
        await event_bus.publish(ch, {"right": "channel"})
        assert await take(events, 1) == [{"right": "channel"}]


async def test_subscribers_get_independent_copies(event_bus: EventBus) -> None:
    ch = channel()
    async with event_bus.subscribe(ch) as first, event_bus.subscribe(ch) as second:
        await event_bus.publish(ch, {"words": ["a"]})
        [mine] = await take(first, 1)
        mine["words"].append("mutated")
        assert await take(second, 1) == [{"words": ["a"]}]


async def test_unsubscribed_after_the_block(event_bus: EventBus) -> None:
    ch = channel()
    async with event_bus.subscribe(ch) as events:
        await event_bus.publish(ch, {"n": 1})
        assert await take(events, 1) == [{"n": 1}]
    async with event_bus.subscribe(ch) as fresh:
        await event_bus.publish(ch, {"n": 2})
        assert await take(fresh, 1) == [{"n": 2}]


async def test_iterating_without_entering_is_an_error(event_bus: EventBus) -> None:
    with pytest.raises(RuntimeError):
        await anext(event_bus.subscribe(channel()))


async def test_unreachable_redis_raises_store_unavailable() -> None:
    from tests.fixtures.processes import free_port

    bus = RedisEventBus(f"redis://127.0.0.1:{free_port()}/0", timeout_s=2)
    try:
        with pytest.raises(StoreUnavailable):
            await bus.publish("ch", {"n": 1})
        with pytest.raises(StoreUnavailable):
            bus.publish_sync("ch", {"n": 1})
        with pytest.raises(StoreUnavailable):
            async with bus.subscribe("ch"):
                pass
    finally:
        await bus.aclose()
