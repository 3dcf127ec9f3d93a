"""Progress events: publish to a channel, fan out to every live subscriber (e.g. SSE streams).

Delivery is best effort and live only: a subscriber sees events published after its
`async with bus.subscribe(channel)` block was entered, in publish order. Durable state lives in
the job store; a client that reconnects re-reads the job and then follows new events.

Events are JSON objects on both backends, so the in-process bus catches unserialisable
payloads the same way Redis would.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import threading
from collections import defaultdict
from types import TracebackType
from typing import Any, Self

import redis
import redis.asyncio
import redis.exceptions

from .errors import StoreError, StoreUnavailable

logger = logging.getLogger(__name__)

Event = dict[str, Any]
_SUBSCRIBE_TIMEOUT_S = 10.0


def _encode(event: Event) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


class Subscription(abc.ABC):
    """Async iterator over one channel's events; use it as `async with ... as events:`."""

    def __init__(self, channel: str, max_queue: int) -> None:
        self.channel = channel
        self._queue: asyncio.Queue[Event | StoreError] = asyncio.Queue(maxsize=max_queue)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dropped = 0

    @abc.abstractmethod
    async def _start(self) -> None:
        """Begin receiving; returns once events published from now on will arrive."""

    @abc.abstractmethod
    async def _stop(self) -> None: ...

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        await self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        if self._loop is None:
            raise RuntimeError("enter the subscription first: `async with bus.subscribe(ch)`")
        item = await self._queue.get()
        if isinstance(item, StoreError):
            raise item
        return item

    def _put(self, item: Event | StoreError) -> None:
        """Queue an item (on the subscriber's loop). A full queue drops the oldest event:
        a stalled SSE client must not grow memory without bound."""
        if self._queue.full():
            self._queue.get_nowait()
            self._dropped += 1
            if self._dropped == 1:
                logger.warning("slow subscriber on %s: dropping oldest events", self.channel)
        self._queue.put_nowait(item)


class EventBus(abc.ABC):
    """Publish/subscribe of JSON events by channel name."""

    @abc.abstractmethod
    async def publish(self, channel: str, event: Event) -> None:
        """Send to every current subscriber of `channel`."""

    @abc.abstractmethod
    def publish_sync(self, channel: str, event: Event) -> None:
        """publish() for synchronous code and other threads."""

    @abc.abstractmethod
    def subscribe(self, channel: str) -> Subscription:
        """A subscription; it starts receiving when its `async with` block is entered."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections; the bus is unusable afterwards."""


class _MemorySubscription(Subscription):
    def __init__(self, bus: MemoryEventBus, channel: str, max_queue: int) -> None:
        super().__init__(channel, max_queue)
        self._bus = bus

    async def _start(self) -> None:
        self._bus._add(self)

    async def _stop(self) -> None:
        self._bus._remove(self)

    def _deliver(self, event: Event) -> None:
        """Thread-safe: asyncio queues may only be touched from their own loop's thread."""
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._put(event)
            return
        try:
            loop.call_soon_threadsafe(self._put, event)
        except RuntimeError:
            # The subscriber's loop has closed without leaving the `async with`; forget it.
            self._bus._remove(self)


class MemoryEventBus(EventBus):
    """In-process fan-out for a single process (tests, laptop runs without Redis)."""

    def __init__(self, max_queue: int = 1000) -> None:
        self._max_queue = max_queue
        self._subscribers: dict[str, set[_MemorySubscription]] = defaultdict(set)
        self._lock = threading.Lock()

    def _add(self, sub: _MemorySubscription) -> None:
        with self._lock:
            self._subscribers[sub.channel].add(sub)

    def _remove(self, sub: _MemorySubscription) -> None:
        with self._lock:
            subs = self._subscribers.get(sub.channel)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscribers[sub.channel]

    async def publish(self, channel: str, event: Event) -> None:
        self.publish_sync(channel, event)

    def publish_sync(self, channel: str, event: Event) -> None:
        payload = _encode(event)
        with self._lock:
            subs = list(self._subscribers.get(channel, ()))
        for sub in subs:
            # A fresh decode per subscriber: nobody can mutate what another one received.
            sub._deliver(json.loads(payload))

    def subscribe(self, channel: str) -> Subscription:
        return _MemorySubscription(self, channel, self._max_queue)

    async def aclose(self) -> None:
        return None  # no connections; live subscriptions end with their `async with`


class _RedisSubscription(Subscription):
    def __init__(self, client: redis.asyncio.Redis, channel: str, max_queue: int) -> None:
        super().__init__(channel, max_queue)
        self._pubsub = client.pubsub()
        self._pump_task: asyncio.Task[None] | None = None

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _SUBSCRIBE_TIMEOUT_S
        try:
            await self._pubsub.subscribe(self.channel)
            # Wait for Redis to confirm: only then are later publishes guaranteed to reach us.
            while loop.time() < deadline:
                message = await self._pubsub.get_message(timeout=1.0)
                if message is not None and message["type"] == "subscribe":
                    break
            else:
                raise StoreUnavailable(f"redis did not confirm subscription to {self.channel}")
        except redis.exceptions.RedisError as exc:
            await self._pubsub.aclose()
            raise StoreUnavailable(f"cannot subscribe to {self.channel}: {exc}") from exc
        # A reader task feeds the queue, so a consumer cancelling its wait (SSE heartbeat
        # timeouts) never interrupts a half-read Redis reply.
        self._pump_task = asyncio.create_task(self._pump(), name=f"redis-sub:{self.channel}")

    async def _pump(self) -> None:
        try:
            async for message in self._pubsub.listen():
                if message["type"] != "message":
                    continue
                try:
                    self._put(json.loads(message["data"]))
                except ValueError:
                    logger.warning("ignoring non-JSON message on %s", self.channel)
        except redis.exceptions.RedisError as exc:
            self._put(StoreUnavailable(f"subscription to {self.channel} lost: {exc}"))

    async def _stop(self) -> None:
        if self._pump_task is not None:
            self._pump_task.cancel()
            await asyncio.gather(self._pump_task, return_exceptions=True)
        # Closing drops the connection, which ends the subscription server-side.
        await self._pubsub.aclose()


class RedisEventBus(EventBus):
    """Redis pub/sub: events reach subscribers in every process and on every node.

    The asyncio client binds its connections to the event loop that first uses them, so use
    one bus per event loop."""

    def __init__(self, url: str, max_queue: int = 1000, timeout_s: float = 10.0) -> None:
        self._max_queue = max_queue
        self._async = redis.asyncio.Redis.from_url(
            url, socket_connect_timeout=timeout_s, health_check_interval=30
        )
        self._sync = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )

    async def publish(self, channel: str, event: Event) -> None:
        payload = _encode(event)
        try:
            await self._async.publish(channel, payload)
        except redis.exceptions.RedisError as exc:
            raise StoreUnavailable(f"cannot publish to {channel}: {exc}") from exc

    def publish_sync(self, channel: str, event: Event) -> None:
        payload = _encode(event)
        try:
            self._sync.publish(channel, payload)
        except redis.exceptions.RedisError as exc:
            raise StoreUnavailable(f"cannot publish to {channel}: {exc}") from exc

    def subscribe(self, channel: str) -> Subscription:
        return _RedisSubscription(self._async, channel, self._max_queue)

    async def aclose(self) -> None:
        await self._async.aclose()
        self._sync.close()
