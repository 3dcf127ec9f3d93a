"""Group commit for job submissions: concurrent submits share one thread hop and one sync.

Up to `writers` batches run at once (the blob store says how many: one for a local folder,
so every submit in a round shares its fsyncs; several for S3, whose puts are requests that
overlap well); submits that arrive while every writer is busy join the next batch
instead of queueing one thread hop each, and a lone submit goes straight through (no added
wait). Every caller's future resolves only after its own writes returned, so a 202 still
means durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Runs `fn(batch)` in a thread, one batch at a time, over whatever queued meanwhile."""

    def __init__(
        self,
        fn: Callable[[Sequence[T]], Sequence[R | Exception]],
        max_batch: int = 64,
        writers: int = 4,
        run: Callable[..., Awaitable[Any]] = asyncio.to_thread,
    ) -> None:
        """`fn` returns one entry per item: its result, or the exception that item raised.
        `run(fn, batch)` takes it off the loop (a store's `guard.run`: its own threads)."""
        self._fn = fn
        self._run = run
        self._max_batch = max_batch
        self._max_writers = writers
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._writers: set[asyncio.Task[None]] = set()  # holds the tasks (not garbage)
        # Writers still draining. Counted down by the writer itself, in the same step as
        # its last look at `_pending`: a task's done-callbacks run a loop turn later, after
        # the callers it just answered, and one of those may submit at once.
        self._active = 0

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._active < self._max_writers:
            # A task of its own: a caller that goes away must not stop other callers' batch.
            self._active += 1
            writer = asyncio.get_running_loop().create_task(self._drain())
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        return await future

    async def _drain(self) -> None:
        try:
            await self._drain_pending()
        finally:
            self._active -= 1

    async def _drain_pending(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            items = [item for item, _ in batch]
            try:
                results: Sequence[R | Exception] = await self._run(self._fn, items)
            except Exception as exc:  # the whole batch failed: every caller gets it
                results = [exc] * len(batch)
            except BaseException:  # cancelled (shutdown): so are the callers
                for _, future in batch:
                    future.cancel()
                raise
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # its caller was cancelled; its writes stand anyway
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
