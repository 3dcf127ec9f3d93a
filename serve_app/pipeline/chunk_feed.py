"""VAD chunks handed to the event loop while VAD still runs: a long file's first chunks
decode while the rest of it is being cut.

`ChunkPlanner.start` runs `cut_chunks` in a thread and returns at once with a `ChunkFeed`;
the thread appends each chunk to the feed's plan (through the event loop) as soon as it is
final, and the feed's waiters wake up. The chunks are the ones `plan_chunks` cuts, in the
same order, so a chunk index names the same audio in every run of a job.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import numpy as np

from serve_app.options import VadSettings
from serve_app.pipeline.chunking import ChunkPlan, cut_chunks
from serve_app.pipeline.decode import SAMPLE_RATE
from serve_app.pipeline.timing import first_window


class FeedStopped(Exception):
    """The feed was abandoned (its request went away) before VAD finished."""


class ChunkFeed:
    """A `ChunkPlan` that fills up on the event loop; `plan` is complete once `finished`."""

    def __init__(self, duration: float) -> None:
        self.plan = ChunkPlan(chunks=[], metadata=[], duration=duration)
        self.finished = False
        self.vad_s = 0.0  # how long the cutting took, start to end
        self._started: float | None = None  # when the cutting began
        self._on_end: list[Callable[[], None]] = []
        self._error: BaseException | None = None
        self._changed = asyncio.Event()
        self._stop = threading.Event()

    @property
    def count(self) -> int:
        """Chunks cut so far."""
        return len(self.plan.chunks)

    async def has(self, index: int) -> bool:
        """Wait until chunk `index` is cut (True) or the feed ended without it (False)."""
        while index >= self.count and not self.finished:
            self._changed.clear()
            await self._changed.wait()
        self._raise()
        return index < self.count

    async def complete(self) -> ChunkPlan:
        """The whole plan, once VAD has gone over all of the audio."""
        while not self.finished:
            self._changed.clear()
            await self._changed.wait()
        self._raise()
        return self.plan

    async def covering(self, seconds: float) -> ChunkPlan:
        """The plan once its speech timestamps reach past `seconds` of the speech-only
        timeline: enough to map times up to there back to the original audio exactly."""
        while not self.finished and self.plan.speech_samples() <= seconds * SAMPLE_RATE + 1:
            self._changed.clear()
            await self._changed.wait()
        self._raise()
        return self.plan

    async def first_window(self) -> list[np.ndarray]:
        """The chunks that cover the first 30 s of speech (language detection's input)."""
        index = 0
        while await self.has(index):
            window = first_window(self.plan.chunks[: index + 1])
            if sum(c.shape[0] for c in window) >= 30 * SAMPLE_RATE:
                return window
            index += 1
        return first_window(self.plan.chunks)

    def on_end(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the plan is complete (or the cutting failed), or now."""
        if self.finished:
            callback()
        else:
            self._on_end.append(callback)

    def abandon(self) -> None:
        """Stop cutting: nobody will read what is left (the request went away)."""
        self._stop.set()

    def _add(self, chunk: np.ndarray, metadata: dict, last: bool) -> None:
        self.plan.chunks.append(chunk)
        self.plan.metadata.append(metadata)
        # The last chunk comes after VAD went over all of the audio: the plan is complete,
        # and its chunk goes out saying nothing more of this request is coming.
        if last:
            self._end()
        self._changed.set()

    def _finish(self, error: BaseException | None) -> None:
        self._error = error
        self._end()
        self._changed.set()

    def _end(self) -> None:
        if self.finished:
            return
        if self._started is not None:
            self.vad_s = round(time.monotonic() - self._started, 4)
        self.finished = True
        callbacks, self._on_end = self._on_end, []
        for callback in callbacks:
            callback()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error


class ChunkPlanner:
    """Cuts chunks off the event loop, at most `workers` audios at once: each VAD run is one
    thread at full speed, so more at once only adds their working memory."""

    def __init__(self, workers: int) -> None:
        self._slots = asyncio.Semaphore(workers)
        self._running: set[asyncio.Task[None]] = set()

    def start(self, samples: np.ndarray, vad: VadSettings | None) -> ChunkFeed:
        """Start cutting `samples`; the feed fills as chunks are cut."""
        feed = ChunkFeed(samples.shape[0] / SAMPLE_RATE)
        task = asyncio.get_running_loop().create_task(self._cut(feed, samples, vad))
        self._running.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._running.discard)
        return feed

    async def _cut(self, feed: ChunkFeed, samples: np.ndarray, vad: VadSettings | None) -> None:
        loop = asyncio.get_running_loop()

        def emit(chunk: np.ndarray, metadata: dict, last: bool) -> None:
            if feed._stop.is_set():
                raise FeedStopped()
            loop.call_soon_threadsafe(feed._add, chunk, metadata, last)

        error: BaseException | None = None
        try:
            async with self._slots:
                feed._started = time.monotonic()
                # Callbacks queued by `emit` run before this await returns (same thread,
                # FIFO), so every chunk is in the plan before the feed says it is finished.
                speech = feed.plan.speech_timestamps  # filled in place, segment by segment
                await asyncio.to_thread(cut_chunks, samples, vad, emit, speech)
        except Exception as exc:  # handed to whoever waits on the feed
            error = exc
        except asyncio.CancelledError:  # the loop is closing
            error = FeedStopped()
            raise
        finally:
            feed._finish(error)
