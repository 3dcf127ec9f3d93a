"""`stream=true` on /v1/audio/transcriptions and /translations: server-sent events.

The events are OpenAI's: `transcript.text.delta` as chunks finish (in audio order, from
`TranscriptionService.stream_chunks`), `transcript.text.segment` with times (and words)
for `response_format=verbose_json`, and `transcript.text.done` with the whole text and the
usage. A failure once the stream has started ends it with an `error` event, never with a
silently truncated stream; failures before it (bad input) are the usual JSON 4xx.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from serve_app.http.errors import event_error
from serve_app.http.schemas import (
    DurationUsage,
    StreamError,
    TranscriptTextDelta,
    TranscriptTextDone,
    TranscriptTextSegment,
    WireWord,
)
from serve_app.pipeline.service import PreparedAudio, TranscriptionService
from serve_app.results import Segment

logger = logging.getLogger("ray.serve")

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class SSEResponse(StreamingResponse):
    """`text/event-stream` that runs `on_close` once the response is over, however it ends
    (also when the client left before the body began, so the generator never ran)."""

    def __init__(
        self,
        content: AsyncIterator[str],
        *,
        on_close: Callable[[], Awaitable[None]],
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            content, media_type="text/event-stream", headers={**SSE_HEADERS, **(headers or {})}
        )
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._on_close()


def sse(event: BaseModel) -> str:
    """One server-sent event: `event: <type>` and the JSON body on one `data:` line."""
    kind = getattr(event, "type", "message")
    return f"event: {kind}\ndata: {event.model_dump_json(exclude_none=True)}\n\n"


class DeltaJoiner:
    """Turns segment texts into deltas whose concatenation is the stripped transcript.

    A transcript is `"".join(segment texts).strip()`: the first delta loses its leading
    space, and trailing whitespace waits for the next text (so nothing dangles at the end).
    """

    def __init__(self) -> None:
        self.text = ""
        self._held = ""

    def feed(self, piece: str) -> str:
        piece = self._held + piece
        if not self.text:
            piece = piece.lstrip()
        delta = piece.rstrip()
        self._held = piece[len(delta) :]
        self.text += delta
        return delta


def segment_event(segment: Segment, words: bool) -> TranscriptTextSegment:
    return TranscriptTextSegment(
        id=f"seg_{segment.id}",
        start=segment.start,
        end=segment.end,
        text=segment.text,
        words=[
            WireWord(word=w.word.strip(), start=w.start, end=w.end, probability=w.probability)
            for w in segment.words or []
        ]
        if words
        else None,
    )


async def transcript_events(
    service: TranscriptionService,
    prepared: PreparedAudio,
    *,
    segments: bool = False,
    words: bool = False,
    finished: Callable[[], None] | None = None,
) -> AsyncIterator[str]:
    """The SSE body of one streamed transcription; `finished()` runs after a done event.

    When the client goes away the chunks still queued are cancelled (by `run_chunks`).
    """
    joiner = DeltaJoiner()
    try:
        async for chunk in service.stream_chunks(prepared):
            for segment in chunk.segments:
                delta = joiner.feed(segment.text)
                if delta:
                    yield sse(TranscriptTextDelta(delta=delta))
                if segments:
                    yield sse(segment_event(segment, words))
        usage = DurationUsage(seconds=round(prepared.plan.duration, 3))
        yield sse(TranscriptTextDone(text=joiner.text, usage=usage))
    except Exception as exc:  # the stream has started: say so in-band, then end it
        logger.warning("stream of model=%s failed after it started: %r", prepared.model, exc)
        yield sse(StreamError(error=event_error(exc)))
        return
    if finished is not None:
        finished()
