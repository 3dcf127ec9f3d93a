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

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, WebSocket
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serve_app.config import RealtimeConfig
from serve_app.errors import (
    BadRequest,
    InvalidEvent,
    PayloadTooLarge,
    RateLimited,
    ServiceError,
    SessionTimeout,
    UnknownEvent,
    UnsupportedAudioFormat,
)
from serve_app.http.access import Access, scope_access
from serve_app.http.errors import event_error, validation_summary
from serve_app.http.schemas import DurationUsage, StreamErrorDetail
from serve_app.http.streaming import DeltaJoiner
from serve_app.observability import LiveObserver
from serve_app.options import LIVE_PRIORITY, Caller, TranscribeOptions
from serve_app.pipeline.live import (
    INPUT_RATES,
    LiveEvent,
    LiveInput,
    ServerVad,
    SpeechStarted,
    SpeechStopped,
    Utterance,
)
from serve_app.pipeline.service import TranscriptionService, fit_to_model

logger = logging.getLogger("ray.serve")

POLICY_VIOLATION = 1008  # WebSocket close code: refused by a limit


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


# ---- client events ------------------------------------------------------------------------


class _Lenient(BaseModel):
    """Fields this server does not use (noise reduction, include, …) are ignored."""

    model_config = ConfigDict(extra="ignore")


class AudioFormat(_Lenient):
    type: str = Field("audio/pcm", description="audio/pcm (16-bit little-endian mono)")
    rate: int | None = Field(None, description="24000 (OpenAI's) or 16000")


class TranscriptionSettings(_Lenient):
    model: str | None = Field(None, description="A model id of this service, e.g. whisper-1")
    language: str | None = None
    prompt: str | None = None


class TurnDetection(_Lenient):
    type: Literal["server_vad", "semantic_vad"]
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    prefix_padding_ms: int | None = Field(None, ge=0, le=5000)
    silence_duration_ms: int | None = Field(None, ge=50, le=10_000)


class AudioInput(_Lenient):
    format: AudioFormat | None = None
    transcription: TranscriptionSettings | None = None
    turn_detection: TurnDetection | None = None


class SessionAudio(_Lenient):
    input: AudioInput | None = None


class TranscriptionSessionConfig(_Lenient):
    """`session` of a `session.update` (the current protocol)."""

    type: Literal["transcription", "realtime"]
    audio: SessionAudio | None = None


class LegacySessionConfig(_Lenient):
    """`session` of a `transcription_session.update` (the older protocol)."""

    input_audio_format: str | None = None
    input_audio_transcription: TranscriptionSettings | None = None
    turn_detection: TurnDetection | None = None


class ClientEvent(_Lenient):
    type: str
    event_id: str | None = Field(None, max_length=128)


class SessionUpdate(ClientEvent):
    type: Literal["session.update"]
    session: TranscriptionSessionConfig


class LegacySessionUpdate(ClientEvent):
    type: Literal["transcription_session.update"]
    session: LegacySessionConfig


class AudioAppend(ClientEvent):
    type: Literal["input_audio_buffer.append"]
    audio: str = Field(description="base64 PCM16 at the session's rate")


class AudioCommit(ClientEvent):
    type: Literal["input_audio_buffer.commit"]


class AudioClear(ClientEvent):
    type: Literal["input_audio_buffer.clear"]


CLIENT_EVENTS: dict[str, type[ClientEvent]] = {
    "session.update": SessionUpdate,
    "transcription_session.update": LegacySessionUpdate,
    "input_audio_buffer.append": AudioAppend,
    "input_audio_buffer.commit": AudioCommit,
    "input_audio_buffer.clear": AudioClear,
}


def decode_event(text: str) -> dict[str, Any]:
    """A client message as a JSON object with a string `type`; raises InvalidEvent."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise InvalidEvent(f"the message is not JSON: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise InvalidEvent("an event is a JSON object with a string 'type'")
    return raw


def validate_event(raw: dict[str, Any]) -> ClientEvent:
    """The event model for `raw["type"]`; raises UnknownEvent or InvalidEvent."""
    model = CLIENT_EVENTS.get(raw["type"])
    if model is None:
        known = ", ".join(CLIENT_EVENTS)
        raise UnknownEvent(f"unknown event type {raw['type'][:64]!r}; this server takes {known}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise InvalidEvent(f"invalid {raw['type']}: {validation_summary(exc)}") from exc


# ---- server events ------------------------------------------------------------------------


class ServerEvent(BaseModel):
    event_id: str = Field(default_factory=lambda: _id("event"))


class FormatView(BaseModel):
    type: Literal["audio/pcm"] = "audio/pcm"
    rate: int


class TranscriptionView(BaseModel):
    model: str
    language: str | None
    prompt: str | None


class TurnDetectionView(BaseModel):
    type: Literal["server_vad"] = "server_vad"
    threshold: float
    prefix_padding_ms: int
    silence_duration_ms: int


class AudioInputView(BaseModel):
    format: FormatView
    transcription: TranscriptionView
    turn_detection: TurnDetectionView | None
    noise_reduction: None = None


class AudioView(BaseModel):
    input: AudioInputView


class SessionView(BaseModel):
    """A transcription session, as `session.created` / `session.updated` show it."""

    type: Literal["transcription"] = "transcription"
    object: Literal["realtime.transcription_session"] = "realtime.transcription_session"
    id: str
    audio: AudioView
    include: list[str] = Field(default_factory=list)


class LegacySessionView(BaseModel):
    """The same session in the older protocol's shape (`transcription_session.updated`)."""

    object: Literal["realtime.transcription_session"] = "realtime.transcription_session"
    id: str
    input_audio_format: str
    input_audio_transcription: TranscriptionView
    turn_detection: TurnDetectionView | None
    input_audio_noise_reduction: None = None
    include: list[str] = Field(default_factory=list)


class SessionCreated(ServerEvent):
    type: Literal["session.created"] = "session.created"
    session: SessionView


class SessionUpdated(ServerEvent):
    type: Literal["session.updated"] = "session.updated"
    session: SessionView


class LegacySessionUpdated(ServerEvent):
    type: Literal["transcription_session.updated"] = "transcription_session.updated"
    session: LegacySessionView


class SpeechStartedEvent(ServerEvent):
    type: Literal["input_audio_buffer.speech_started"] = "input_audio_buffer.speech_started"
    audio_start_ms: int
    item_id: str


class SpeechStoppedEvent(ServerEvent):
    type: Literal["input_audio_buffer.speech_stopped"] = "input_audio_buffer.speech_stopped"
    audio_end_ms: int
    item_id: str


class CommittedEvent(ServerEvent):
    type: Literal["input_audio_buffer.committed"] = "input_audio_buffer.committed"
    item_id: str
    previous_item_id: str | None = None


class ClearedEvent(ServerEvent):
    type: Literal["input_audio_buffer.cleared"] = "input_audio_buffer.cleared"


class TranscriptionDelta(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.delta"] = (
        "conversation.item.input_audio_transcription.delta"
    )
    item_id: str
    content_index: int = 0
    delta: str


class TranscriptionCompleted(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.completed"] = (
        "conversation.item.input_audio_transcription.completed"
    )
    item_id: str
    content_index: int = 0
    transcript: str
    usage: DurationUsage


class TranscriptionFailed(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.failed"] = (
        "conversation.item.input_audio_transcription.failed"
    )
    item_id: str
    content_index: int = 0
    error: StreamErrorDetail


class ErrorEvent(ServerEvent):
    type: Literal["error"] = "error"
    error: StreamErrorDetail


# ---- the session ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionSettings:
    """A session's effective settings: input format, turn detection, transcription options."""

    rate: int
    vad: ServerVad | None
    model: str  # the id the client chose (or the default model's name)
    options: TranscribeOptions


class RealtimeSession:
    """One WebSocket session: parses client events, runs the input buffer, sends events."""

    def __init__(
        self,
        websocket: WebSocket,
        service: TranscriptionService,
        config: RealtimeConfig,
        access: Access,
        *,
        model: str | None = None,
        observer: LiveObserver | None = None,
    ) -> None:
        self.ws = websocket
        self.service = service
        self.config = config
        self.caller = Caller(tenant=access.tenant, priority=LIVE_PRIORITY)
        self.observer = observer
        self.id = _id("sess")
        default = service.resolve_model(None).name
        chosen = model if model and service.config.resolve_model(model) else default
        vad = config.vad
        self.settings = SessionSettings(
            rate=24000,
            vad=ServerVad(vad.threshold, vad.prefix_padding_ms, vad.silence_duration_ms),
            model=chosen,
            options=TranscribeOptions(model=chosen),
        )
        self.input = LiveInput(
            self.settings.rate,
            self.settings.vad,
            max_buffered_s=config.max_buffered_s,
            max_utterance_s=config.max_utterance_s,
        )
        self._item: str | None = None  # the turn being spoken (server VAD)
        self._last_item: str | None = None
        self._previous: asyncio.Future[None] | None = None  # the last turn's events are out
        self._tasks: set[asyncio.Task[None]] = set()
        self._send_lock = asyncio.Lock()
        self._closed = False

    async def run(self) -> None:
        """Serve the session until the client leaves or a limit ends it."""
        await self.send(SessionCreated(session=self.view()))
        loop = asyncio.get_running_loop()
        ends = loop.time() + self.config.max_session_s
        try:
            while not self._closed:
                idle_ends = loop.time() + self.config.idle_timeout_s
                try:
                    message = await asyncio.wait_for(
                        self.ws.receive(), max(0.0, min(idle_ends, ends) - loop.time())
                    )
                except TimeoutError:
                    if loop.time() >= ends:
                        limit = self.config.max_session_s
                        await self.close(SessionTimeout(f"the session reached {limit:.0f} s"))
                        return
                    if self._tasks:  # waiting for transcripts is not idling
                        continue
                    idle = self.config.idle_timeout_s
                    await self.close(SessionTimeout(f"no client event for {idle:.0f} s"))
                    return
                if message["type"] == "websocket.disconnect":
                    return
                await self.handle(message.get("text"), message.get("bytes"))
        finally:
            await self._cancel_pending()

    async def handle(self, text: str | None, data: bytes | None) -> None:
        """One client message; a bad one gets an `error` event and the session goes on."""
        event_id: str | None = None
        try:
            if text is None:
                size = len(data or b"")
                if size > self.config.max_message_bytes:
                    raise self._too_large(size)
                raise InvalidEvent("binary messages are not events; send JSON text messages")
            if len(text) > self.config.max_message_bytes:
                raise self._too_large(len(text.encode()))
            raw = decode_event(text)
            if isinstance(raw.get("event_id"), str):
                event_id = raw["event_id"][:128]
            await self._dispatch(validate_event(raw))
        except ServiceError as exc:
            await self.send(ErrorEvent(error=event_error(exc, event_id)))

    async def _dispatch(self, event: ClientEvent) -> None:
        if isinstance(event, AudioAppend):
            await self._append(event.audio)
        elif isinstance(event, AudioCommit):
            utterance = self.input.commit()
            item, self._item = self._item or _id("item"), None
            self._commit(item, utterance)
            await self._send_committed(item)
        elif isinstance(event, AudioClear):
            self.input.clear()
            self._item = None
            await self.send(ClearedEvent())
        elif isinstance(event, SessionUpdate):
            if event.session.type != "transcription":
                raise BadRequest("this server has transcription sessions only (type=transcription)")
            await self._configure(event.session.audio.input if event.session.audio else None)
            await self.send(SessionUpdated(session=self.view()))
        elif isinstance(event, LegacySessionUpdate):
            await self._configure(_from_legacy(event.session))
            await self.send(LegacySessionUpdated(session=self.legacy_view()))

    async def _append(self, audio: str) -> None:
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidEvent("input_audio_buffer.append: audio is not valid base64") from exc
        if len(raw) % 2:
            raise InvalidEvent("input_audio_buffer.append: pcm16 audio has whole 2-byte samples")
        events = self.input.append(np.frombuffer(raw, dtype="<i2"))
        await self._follow(events)

    async def _follow(self, events: list[LiveEvent]) -> None:
        """Tell the client what the server VAD saw, and commit the turns it ended."""
        for event in events:
            if isinstance(event, SpeechStarted):
                self._item = _id("item")
                await self.send(
                    SpeechStartedEvent(audio_start_ms=event.audio_start_ms, item_id=self._item)
                )
            elif isinstance(event, SpeechStopped):
                item = self._item or _id("item")
                self._item = item
                await self.send(SpeechStoppedEvent(audio_end_ms=event.audio_end_ms, item_id=item))
            elif isinstance(event, Utterance):
                item, self._item = self._item or _id("item"), None
                self._commit(item, event)
                await self._send_committed(item)

    async def _send_committed(self, item: str) -> None:
        previous, self._last_item = self._last_item, item
        await self.send(CommittedEvent(item_id=item, previous_item_id=previous))

    def _commit(self, item: str, utterance: Utterance) -> None:
        """Transcribe a committed turn in the background; its events keep commit order."""
        previous = self._previous
        emitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._previous = emitted
        task = asyncio.ensure_future(
            self._transcribe(item, utterance, self.settings, previous, emitted)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _transcribe(
        self,
        item: str,
        utterance: Utterance,
        settings: SessionSettings,
        previous: asyncio.Future[None] | None,
        emitted: asyncio.Future[None],
    ) -> None:
        committed = time.monotonic()
        outcome = "cancelled"
        joiner = DeltaJoiner()
        held: list[str] = []  # deltas waiting for the previous turn's events
        try:
            try:
                prepared = await self.service.prepare(
                    utterance.samples, settings.options, self.caller
                )
                async for chunk in self.service.stream_chunks(prepared):
                    delta = joiner.feed(chunk.text)
                    if delta:
                        held.append(delta)
                    if previous is None or previous.done():
                        await self._send_deltas(item, held)
                if previous is not None:
                    await asyncio.shield(previous)
                await self._send_deltas(item, held)
                usage = DurationUsage(seconds=round(utterance.duration, 3))
                completed = TranscriptionCompleted(
                    item_id=item, transcript=joiner.text, usage=usage
                )
                await self.send(completed)
                outcome = "completed"
            except Exception as exc:  # ServiceErrors, and anything else (logged as internal)
                if previous is not None:
                    await asyncio.shield(previous)
                logger.warning("realtime turn %s failed: %r", item, exc)
                await self.send(TranscriptionFailed(item_id=item, error=event_error(exc)))
                outcome = "failed"
        finally:
            if not emitted.done():
                emitted.set_result(None)
            if self.observer is not None:
                seconds = time.monotonic() - committed
                self.observer.utterance_done(settings.model, outcome, seconds)

    async def _send_deltas(self, item: str, held: list[str]) -> None:
        while held:
            await self.send(TranscriptionDelta(item_id=item, delta=held.pop(0)))

    async def _configure(self, update: AudioInput | None) -> None:
        """Apply the fields present in a session update (absent ones stay as they are)."""
        settings = self.settings
        if update is None:
            return
        fields = update.model_fields_set
        if "format" in fields:
            settings = replace(settings, rate=_rate(update.format))
        if "turn_detection" in fields:
            settings = replace(settings, vad=self._vad(update.turn_detection, settings.vad))
        if update.transcription is not None:
            settings = await self._transcription(update.transcription, settings)
        self.settings = settings  # only a fully valid update is applied
        self.input.configure(settings.rate, settings.vad)
        if not self.input.speaking:
            self._item = None

    def _vad(self, detection: TurnDetection | None, current: ServerVad | None) -> ServerVad | None:
        if detection is None:
            return None  # manual commits
        if detection.type != "server_vad":
            raise BadRequest("turn_detection: only server_vad (or null for manual commits)")
        base = current or ServerVad(
            self.config.vad.threshold,
            self.config.vad.prefix_padding_ms,
            self.config.vad.silence_duration_ms,
        )
        changes = {
            k: v
            for k in ("threshold", "prefix_padding_ms", "silence_duration_ms")
            if (v := getattr(detection, k)) is not None
        }
        return replace(base, **changes)

    async def _transcription(
        self, update: TranscriptionSettings, settings: SessionSettings
    ) -> SessionSettings:
        fields = update.model_fields_set
        current = settings.options
        model = settings.model
        if "model" in fields:
            model = update.model or self.service.resolve_model(None).name
        values = {
            "model": model,
            "language": update.language if "language" in fields else current.language,
            "prompt": update.prompt if "prompt" in fields else current.prompt,
        }
        try:
            options = TranscribeOptions.model_validate(values)
        except ValidationError as exc:
            raise BadRequest(f"invalid transcription settings: {validation_summary(exc)}") from exc
        resolved = self.service.resolve_model(options.model)  # UnknownModel (model_not_found)
        fit_to_model(options.decode_options(), await self.service.model_info(resolved.name))
        return replace(settings, model=model, options=options)

    def view(self) -> SessionView:
        settings = self.settings
        return SessionView(
            id=self.id,
            audio=AudioView(
                input=AudioInputView(
                    format=FormatView(rate=settings.rate),
                    transcription=self._transcription_view(),
                    turn_detection=_vad_view(settings.vad),
                )
            ),
        )

    def legacy_view(self) -> LegacySessionView:
        settings = self.settings
        return LegacySessionView(
            id=self.id,
            input_audio_format="pcm16" if settings.rate == 24000 else f"pcm16_{settings.rate}",
            input_audio_transcription=self._transcription_view(),
            turn_detection=_vad_view(settings.vad),
        )

    def _transcription_view(self) -> TranscriptionView:
        options = self.settings.options
        return TranscriptionView(
            model=self.settings.model, language=options.language, prompt=options.prompt
        )

    def _too_large(self, size: int) -> PayloadTooLarge:
        limit = self.config.max_message_bytes
        return PayloadTooLarge(f"a message of {size} bytes exceeds the limit of {limit} bytes")

    async def send(self, event: BaseModel) -> None:
        """Send one event; a client that is gone is noticed by the receive loop."""
        if self._closed:
            return
        async with self._send_lock:
            try:
                await self.ws.send_text(event.model_dump_json())
            except Exception as exc:  # the socket went away under us
                logger.debug("realtime session %s: send failed: %r", self.id, exc)
                self._closed = True

    async def close(self, reason: ServiceError, code: int = 1000) -> None:
        """End the session: an `error` event saying why, then the close frame."""
        await self.send(ErrorEvent(error=event_error(reason)))
        self._closed = True
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, reason=reason.message[:120])

    async def _cancel_pending(self) -> None:
        """The client left (or the session ended): drop its queued and running turns."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def _rate(fmt: AudioFormat | None) -> int:
    if fmt is None:
        return 24000
    if fmt.type != "audio/pcm":
        raise UnsupportedAudioFormat(
            f"audio format {fmt.type[:32]!r} is not supported; use audio/pcm (16-bit PCM)"
        )
    rate = fmt.rate or 24000
    if rate not in INPUT_RATES:
        raise UnsupportedAudioFormat(f"audio/pcm at {rate} Hz is not supported; use 24000 or 16000")
    return rate


def _from_legacy(session: LegacySessionConfig) -> AudioInput:
    """The older update's fields, as the current protocol's `audio.input`."""
    fields: dict[str, Any] = {}
    given = session.model_fields_set
    if "input_audio_format" in given:
        name = session.input_audio_format or "pcm16"
        if name != "pcm16":
            raise UnsupportedAudioFormat(
                f"input_audio_format {name[:32]!r} is not supported; use pcm16 (24 kHz)"
            )
        fields["format"] = AudioFormat(type="audio/pcm", rate=24000)
    if "input_audio_transcription" in given:
        fields["transcription"] = session.input_audio_transcription
    if "turn_detection" in given:
        fields["turn_detection"] = session.turn_detection
    return AudioInput(**fields)


def _vad_view(vad: ServerVad | None) -> TurnDetectionView | None:
    if vad is None:
        return None
    return TurnDetectionView(
        threshold=vad.threshold,
        prefix_padding_ms=vad.prefix_padding_ms,
        silence_duration_ms=vad.silence_duration_ms,
    )


def realtime_router(
    service: TranscriptionService, config: RealtimeConfig, observer: LiveObserver | None = None
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
                websocket, service, config, access, model=model, observer=observer
            )
            await session.run()
        finally:
            open_sessions[key] -= 1
            if open_sessions[key] <= 0:
                del open_sessions[key]
            report()

    return router
