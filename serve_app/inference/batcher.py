"""Cross-request micro-batching of audio chunks.

Chunks from every caller (HTTP, handles, jobs) queue here, grouped by their decode-options
key; chunks that share a key are decoded in one batched call. At most `concurrency` batches
run at once per replica (one per model worker), and the next batch is formed only when a
worker is free, so chunks that arrive while the workers are busy are picked up together:
under load batches fill up without waiting. When other workers are idle and the callers
said nothing more is coming, the queue is split evenly over them (`_share`).

How long a non-full batch waits is the callers' word where they give it (`linger`): while
more chunks are known to be on their way (requests still decoding at the ingress) it
waits up to `max_linger_s` for them; when nothing more is coming it runs at once; without
word it waits `batch_wait_timeout_s`, as a classic micro-batcher does.

Priority works both ways. Urgent items (priority >= `urgent_priority`: live and interactive
calls) and background items (jobs) queue in separate lanes, so an urgent batch is never
padded with background work. Urgent batches go first; while urgent traffic is present,
background batches are kept to `busy_background_batch_size` (a running batch cannot be
interrupted), and background work that has waited `busy_window_s` gets every other batch,
so a steady interactive stream cannot starve jobs. Background work may take every worker:
keeping one free for urgent work was measured (benchmarks/README.md, mixed load) to slow a
job by 1.6x while urgent latency stayed bound by its own queue.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from serve_app.config import BatchSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(order=True)
class _Pending(Generic[T, R]):
    sort_key: tuple[int, int]
    arrived: float = field(compare=False)
    item: T = field(compare=False)
    future: asyncio.Future[R] = field(compare=False)


@dataclass
class BatchRecord:
    """What one executed batch looked like (for metrics and logs)."""

    key: str
    size: int
    queue_wait_s: float
    run_s: float


class KeyedBatcher(Generic[T, R]):
    """Queues items by key and runs same-key items together, highest priority first."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        settings: BatchSettings,
        *,
        on_batch: Callable[[BatchRecord], None] | None = None,
        on_queued: Callable[[int], None] | None = None,
        cost: Callable[[T], float] | None = None,
        linger: Callable[[Sequence[T]], bool | None] | None = None,
        urgent_priority: int | None = None,
        concurrency: int = 1,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._run_batch = run_batch
        self._concurrency = concurrency
        # Capacity is max_batch_size "slots"; an item may use less than one slot (packed
        # short clips share a window) — by default every item is one slot.
        self._cost = cost or (lambda _item: 1.0)
        self._settings = settings
        # True: more is coming, wait for it; False: nothing is, run now; None: no word.
        self._linger = linger or (lambda _items: None)
        self._urgent_priority = urgent_priority
        self._last_urgent = -float("inf")
        self._last_batch_urgent = False
        self._on_batch = on_batch
        # Told the queue length whenever items join or leave it (a queue-depth gauge).
        self._on_queued = on_queued or (lambda _n: None)
        # (key, urgent lane) -> heap of pending items.
        self._queues: dict[tuple[str, bool], list[_Pending[T, R]]] = {}
        self._seq = itertools.count()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._slots: asyncio.Semaphore | None = None
        # Running batches -> (started, cost): what the busy workers still have to do.
        self._running: dict[asyncio.Task[None], tuple[float, float]] = {}
        self._seconds_per_slot: float | None = None  # learned from finished batches
        self.size_histogram: Counter[int] = Counter()
        self.batches = 0

    @property
    def settings(self) -> BatchSettings:
        return self._settings

    def update(self, settings: BatchSettings) -> None:
        """Apply new limits; the next batch uses them."""
        self._settings = settings
        if self._wakeup is not None:
            self._wakeup.set()

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._queues.values())

    async def submit(self, key: str, item: T, priority: int = 0) -> R:
        """Queue one item and wait for its result."""
        loop = asyncio.get_running_loop()
        self._ensure_worker()
        future: asyncio.Future[R] = loop.create_future()
        now = time.monotonic()
        urgent = self._urgent_priority is not None and priority >= self._urgent_priority
        if urgent:
            self._last_urgent = now
        pending = _Pending((-priority, next(self._seq)), now, item, future)
        heapq.heappush(self._queues.setdefault((key, urgent), []), pending)
        self._on_queued(self.queued)
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            return await future
        finally:
            # Cancelled callers (client gone, job cancelled) are skipped at dispatch time.
            if not future.done():
                future.cancel()

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._slots = asyncio.Semaphore(self._concurrency)
            self._worker = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        assert self._wakeup is not None and self._slots is not None
        while True:
            # A batch is formed only once a worker is free to run it.
            await self._slots.acquire()
            started = False
            try:
                lane = self._next_lane()
                if lane is None:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                await self._fill(lane)
                batch = self._take(lane, self._share(lane))
                self._on_queued(self.queued)
                if batch:
                    self._last_batch_urgent = lane[1]
                    task = asyncio.get_running_loop().create_task(self._execute(lane, batch))
                    cost = sum(self._cost(p.item) for p in batch)
                    self._running[task] = (time.monotonic(), cost)
                    task.add_done_callback(self._batch_done)
                    started = True
            finally:
                if not started:
                    self._slots.release()

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        started, cost = self._running.pop(task, (time.monotonic(), 0.0))
        if cost > 0 and not task.cancelled():
            rate = (time.monotonic() - started) / cost
            learned = self._seconds_per_slot
            self._seconds_per_slot = rate if learned is None else 0.8 * learned + 0.2 * rate
        assert self._slots is not None
        self._slots.release()

    def _next_lane(self) -> tuple[str, bool] | None:
        """The queue the next batch comes from: best priority, unless background starves."""
        self._drop_cancelled()
        if not self._queues:
            return None
        best = min(self._queues, key=lambda lane: self._queues[lane][0].sort_key)
        if best[1] and self._last_batch_urgent:
            # After an urgent batch, background work that waited long enough goes next.
            patience = time.monotonic() - self._settings.busy_window_s
            starved = [
                lane
                for lane, queue in self._queues.items()
                if not lane[1] and min(p.arrived for p in queue) < patience
            ]
            if starved:
                return min(starved, key=lambda lane: self._queues[lane][0].sort_key)
        return best

    async def _fill(self, lane: tuple[str, bool]) -> None:
        """Wait until the batch of `lane` is full or its oldest item has waited long enough."""
        assert self._wakeup is not None
        queue = self._queues[lane]
        oldest = min(p.arrived for p in queue)
        while self._queued_cost(queue) < self._capacity(lane):
            coming = self._linger([p.item for p in queue if not p.future.done()])
            if coming is False:
                return
            limit = self._settings.max_linger_s if coming else self._settings.batch_wait_timeout_s
            remaining = oldest + limit - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _share(self, lane: tuple[str, bool]) -> float | None:
        """This batch's part of the queue once the callers said nothing more is coming and
        all of it would fit in this one batch.

        The queued work is split evenly over this worker, the idle ones and the busy ones
        that will be free soon (less than half the queue left to run; their remaining work
        counted), so that a burst that fits one batch (short packed clips cost less than a
        slot) does not run on one worker while another idles or is about to be free. A
        worker that stays busy longer gets nothing left for it. While more is on its way
        the batch takes what it can: splitting early left late arrivals for a third batch.
        """
        queue = self._queues.get(lane, [])
        if not queue or self._linger([p.item for p in queue if not p.future.done()]) is not False:
            return None
        queued = self._queued_cost(queue)
        if queued > self._capacity(lane):
            # More than one batch's worth: the capacity splits it already, and a word of
            # "nothing more" that came too early (a request still on its way to the
            # ingress) would leave its chunk to wait for a third batch.
            return None
        now = time.monotonic()
        soon = [
            left
            for left in (self._left(started, cost, now) for started, cost in self._running.values())
            if left < queued / 2
        ]
        idle = self._concurrency - len(self._running) - 1
        share = (queued + sum(soon)) / (1 + idle + len(soon))
        return share if share < queued else None

    def _left(self, started: float, cost: float, now: float) -> float:
        """A running batch's work still to do, in slots (all of it until a rate is known)."""
        if not self._seconds_per_slot:
            return cost
        return cost * max(0.0, 1 - (now - started) / (cost * self._seconds_per_slot))

    def _take(self, lane: tuple[str, bool], share: float | None = None) -> list[_Pending[T, R]]:
        queue = self._queues.get(lane, [])
        batch: list[_Pending[T, R]] = []
        used = 0.0
        capacity = self._capacity(lane) if share is None else min(self._capacity(lane), share)
        while queue:
            if queue[0].future.done():  # caller went away while queued
                heapq.heappop(queue)
                continue
            cost = self._cost(queue[0].item)
            if batch and used + cost > capacity + 1e-9:
                break
            batch.append(heapq.heappop(queue))
            used += cost
        if not queue:
            self._queues.pop(lane, None)
        return batch

    def _capacity(self, lane: tuple[str, bool]) -> float:
        """Slots for the next batch of `lane`: fewer for background work while busy."""
        settings = self._settings
        busy = time.monotonic() - self._last_urgent < settings.busy_window_s
        if not lane[1] and busy:
            return min(settings.max_batch_size, settings.busy_background_batch_size)
        return settings.max_batch_size

    async def _execute(self, lane: tuple[str, bool], batch: list[_Pending[T, R]]) -> None:
        started = time.monotonic()
        try:
            results = await self._run_batch([p.item for p in batch])
        except Exception as exc:  # every caller of the batch gets the same error
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            logger.warning("batch of %d failed: %r", len(batch), exc)
            return
        if len(results) != len(batch):
            error = RuntimeError(f"batch returned {len(results)} results for {len(batch)} items")
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)
        if lane[1]:
            # Closed-loop callers send their next request right after this answer.
            self._last_urgent = time.monotonic()
        record = BatchRecord(
            key=lane[0],
            size=len(batch),
            queue_wait_s=started - min(p.arrived for p in batch),
            run_s=time.monotonic() - started,
        )
        self.batches += 1
        self.size_histogram[record.size] += 1
        if self._on_batch is not None:
            self._on_batch(record)

    def _queued_cost(self, queue: list[_Pending[T, R]]) -> float:
        return sum(self._cost(p.item) for p in queue if not p.future.done())

    def _drop_cancelled(self) -> None:
        for key in list(self._queues):
            queue = [p for p in self._queues[key] if not p.future.done()]
            if queue:
                heapq.heapify(queue)
                self._queues[key] = queue
            else:
                del self._queues[key]
