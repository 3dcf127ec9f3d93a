"""Sending one request's chunks through the shared batching path, as VAD cuts them.

`run_chunks` yields chunk results as they finish; `in_order` turns them into the
transcript's parts in audio order (streamed responses, realtime turns). Both are used by
`TranscriptionService` and work the same on Ray and on in-process replicas.
"""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Container
from dataclasses import dataclass
from typing import cast

from serve_app.errors import Overloaded
from serve_app.inference.protocol import ChunkRequest, ChunkResult, ModelClient
from serve_app.options import Caller, DecodeOptions, FallbackPolicy
from serve_app.pipeline.chunk_feed import ChunkFeed
from serve_app.pipeline.chunking import restore_timestamps
from serve_app.pipeline.fallback import decode_with_fallback
from serve_app.pipeline.vocabulary import apply_spellings
from serve_app.results import Segment

# Bounds object-store memory for very long files: chunks beyond this wait their turn.
MAX_CHUNKS_IN_FLIGHT = 32


@dataclass
class ChunkTranscript:
    """One chunk's part of a streamed transcript, handed out in audio order."""

    index: int
    segments: list[Segment]  # times in the original audio; ids numbered across the stream
    result: ChunkResult

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments)


@dataclass
class ChunkRun:
    """What every chunk request of one transcription shares."""

    client: ModelClient
    feed: ChunkFeed
    options: DecodeOptions
    caller: Caller
    pack: bool
    fallback: FallbackPolicy
    source: str  # the ingress, for the replicas' "more is coming" bookkeeping
    coming: Callable[[], int]  # other requests still decoding whose chunks may join
    hint_seq: Callable[[], int]  # the sender's next hint number (see ChunkRequest)


async def run_chunks(
    run: ChunkRun, skip: Container[int] = ()
) -> AsyncIterator[tuple[int, ChunkResult]]:
    """Send each chunk as soon as VAD has cut it; yield (index, result) as they finish.

    Closing the generator early cancels the chunks in flight and stops the cutting.
    """
    feed = run.feed
    request_id = uuid.uuid4().hex
    semaphore = asyncio.Semaphore(MAX_CHUNKS_IN_FLIGHT)
    done: asyncio.Queue[asyncio.Task[tuple[int, ChunkResult]] | None] = asyncio.Queue()
    tasks: list[asyncio.Task[tuple[int, ChunkResult]]] = []

    async def one(i: int) -> tuple[int, ChunkResult]:
        async with semaphore:
            meta = feed.plan.metadata[i]
            # Chunks that wait for a free in-flight slot are not "coming" to the replica.
            ahead = 0 if semaphore.locked() else feed.count - i - 1
            chunk = ChunkRequest(
                audio=feed.plan.chunks[i],
                offset=meta["offset"],
                duration=meta["duration"],
                options=run.options,
                priority=run.caller.priority,
                tenant=run.caller.tenant,
                request_id=request_id,
                index=i,
                pack=run.pack,
                source=run.source,
                incoming=max(0, ahead) + (0 if feed.finished else 1) + run.coming(),
                hint_seq=run.hint_seq(),
            )
            return i, await decode_with_fallback(run.client, chunk, run.fallback)

    async def dispatch() -> None:
        index = 0
        try:
            while await feed.has(index):
                if index not in skip:
                    task = asyncio.ensure_future(one(index))
                    task.add_done_callback(done.put_nowait)
                    tasks.append(task)
                index += 1
        finally:
            done.put_nowait(None)  # no more tasks: the consumer may end once they are out

    dispatcher = asyncio.ensure_future(dispatch())
    try:
        out, dispatching = 0, True
        while dispatching or out < len(tasks):
            finished = await done.get()
            if finished is None:
                dispatching = False
                dispatcher.result()  # the cutting failed: raise it here
                continue
            out += 1
            yield finished.result()
    finally:
        if not feed.finished:
            feed.abandon()
        for task in [dispatcher, *tasks]:
            if not task.done():
                task.cancel()


async def in_order(
    chunks: AsyncIterator[tuple[int, ChunkResult]],
    feed: ChunkFeed,
    spellings: list,
    timeout_s: float,
) -> AsyncIterator[ChunkTranscript]:
    """Chunks in audio order, each as soon as it and every chunk before it are done.

    Chunks that finish early wait here until the ones before them are out. Times are
    restored to the original audio per chunk, as `assemble` does for the whole. The stream
    as a whole is capped at `timeout_s` (`Overloaded`, 503).
    """
    deadline = time.monotonic() + timeout_s
    finished: dict[int, ChunkResult] = {}
    next_index, next_id = 0, 1
    # An async generator: closing it cancels the chunks still in flight.
    results = cast(AsyncGenerator[tuple[int, ChunkResult]], chunks)
    try:
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                index, result = await asyncio.wait_for(anext(results), remaining)
            except StopAsyncIteration:
                break
            except TimeoutError as exc:
                raise Overloaded(f"transcription did not finish within {timeout_s:.0f} s") from exc
            finished[index] = result
            while next_index in finished:
                result = finished.pop(next_index)
                segments = [copy.deepcopy(seg) for seg in result.segments]
                plan = await feed.covering(_latest_time(segments))
                segments = restore_timestamps(segments, plan)
                segments = apply_spellings(segments, spellings)
                for segment in segments:
                    segment.id = next_id
                    next_id += 1
                yield ChunkTranscript(next_index, segments, result)
                next_index += 1
    finally:
        await results.aclose()


def _latest_time(segments: list[Segment]) -> float:
    """The latest time a chunk's transcript mentions, on the speech-only timeline."""
    ends = [s.end for s in segments] + [w.end for s in segments for w in s.words or []]
    return max(ends, default=0.0)
