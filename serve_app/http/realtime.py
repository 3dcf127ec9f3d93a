"""`/v1/realtime`: OpenAI's realtime transcription protocol over a WebSocket.

Transcription-only sessions. Client events: `session.update` (`session.type =
"transcription"`, settings under `session.audio.input`) or the older
`transcription_session.update`, `input_audio_buffer.append` (base64 PCM16, 24 kHz as
OpenAI's `audio/pcm`, or 16 kHz), `input_audio_buffer.commit` and `.clear`. Server events:
`session.created` / `session.updated` (`transcription_session.updated` for the older
update), `input_audio_buffer.speech_started` / `speech_stopped` / `committed` / `cleared`,
`conversation.item.input_audio_transcription.delta` / `.completed` / `.failed`, `error`.

Each committed turn (server VAD in `serve_app.pipeline.live`, or a client commit) is a 16 kHz
array for `TranscriptionService.prepare` + `stream_chunks`, with `Caller(tenant,
LIVE_PRIORITY)`: the same batching path as HTTP, jobs and handle calls, above them in the
replica's queue, sharing batches with other sessions. Transcripts come out in commit order.

The rules of the other routes apply: the handshake is authenticated by AccessMiddleware (the
Authorization header; the default tenant with auth off), a key holds at most
`realtime.max_sessions_per_key` sessions here, messages, buffered audio and sessions are
bounded, an idle session is closed, a malformed message gets an `error` event and the session
goes on, and a disconnect cancels the session's queued chunks.
"""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, WebSocket

from serve_app.config import RealtimeConfig
from serve_app.errors import (
    RateLimited,
)
from serve_app.http.access import scope_access
from serve_app.http.errors import event_error
from serve_app.http.realtime_events import ErrorEvent
from serve_app.http.realtime_session import POLICY_VIOLATION, RealtimeSession
from serve_app.observability import LiveObserver
from serve_app.pipeline.service import TranscriptionService
from serve_app.security.usage import UsageMeter


def realtime_router(
    service: TranscriptionService,
    config: RealtimeConfig,
    observer: LiveObserver | None = None,
    meter: UsageMeter | None = None,
) -> APIRouter:
    """The `/v1/realtime` WebSocket, with a per-key limit on open sessions."""
    router = APIRouter()
    open_sessions: Counter[str] = Counter()

    def report() -> None:
        if observer is not None:
            observer.sessions_open(sum(open_sessions.values()))

    @router.websocket("/v1/realtime")
    async def realtime(websocket: WebSocket, model: str | None = None) -> None:
        access = scope_access(websocket.scope)
        key = access.principal.key_id
        if open_sessions[key] >= config.max_sessions_per_key:
            await websocket.accept()
            limit = config.max_sessions_per_key
            refusal = RateLimited(f"this API key already has {limit} open realtime sessions")
            await websocket.send_text(ErrorEvent(error=event_error(refusal)).model_dump_json())
            await websocket.close(code=POLICY_VIOLATION, reason="too many sessions for this key")
            return
        open_sessions[key] += 1
        report()
        try:
            await websocket.accept()
            session = RealtimeSession(
                websocket, service, config, access, model=model, observer=observer, meter=meter
            )
            await session.run()
        finally:
            open_sessions[key] -= 1
            if open_sessions[key] <= 0:
                del open_sessions[key]
            report()

    return router
