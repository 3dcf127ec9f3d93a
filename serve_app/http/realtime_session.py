"""One realtime WebSocket session: input buffer, turns through the shared batcher, events."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from dataclasses import replace

import numpy as np
from fastapi import WebSocket
from pydantic import BaseModel, ValidationError

from serve_app.config import RealtimeConfig
from serve_app.errors import (
    BadRequest,
    InvalidEvent,
    PayloadTooLarge,
    ServiceError,
    SessionTimeout,
)
from serve_app.http.access import Access
from serve_app.http.errors import event_error, validation_summary
from serve_app.http.realtime_events import (
    AudioAppend,
    AudioClear,
    AudioCommit,
    AudioInput,
    ClearedEvent,
    ClientEvent,
    CommittedEvent,
    ErrorEvent,
    LegacySessionUpdate,
    LegacySessionUpdated,
    SessionCreated,
    SessionSettings,
    SessionUpdate,
    SessionUpdated,
    SpeechStartedEvent,
    SpeechStoppedEvent,
    TranscriptionCompleted,
    TranscriptionDelta,
    TranscriptionFailed,
    TranscriptionSettings,
    TurnDetection,
    decode_event,
    from_legacy,
    legacy_session_view,
    new_id,
    rate,
    session_view,
    validate_event,
)
from serve_app.http.schemas import DurationUsage
from serve_app.http.streaming import DeltaJoiner
from serve_app.observability import LiveObserver
from serve_app.options import LIVE_PRIORITY, Caller, TranscribeOptions
from serve_app.pipeline.live import (
    LiveEvent,
    LiveInput,
    ServerVad,
    SpeechStarted,
    SpeechStopped,
    Utterance,
)
from serve_app.pipeline.service import TranscriptionService, fit_to_model
from serve_app.security.usage import UsageMeter

logger = logging.getLogger("ray.serve")

POLICY_VIOLATION = 1008  # WebSocket close code: refused by a limit


# ---- the session ---------------------------------------------------------------------------


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
        meter: UsageMeter | None = None,
    ) -> None:
        self.ws = websocket
        self.meter = meter
        self.key_id = access.principal.key_id
        self.quota = access.principal.limits.audio_minutes_per_day
        self.service = service
        self.config = config
        self.caller = Caller(tenant=access.tenant, priority=LIVE_PRIORITY)
        self.observer = observer
        self.id = new_id("sess")
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
        await self.send(SessionCreated(session=session_view(self.id, self.settings)))
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
            item, self._item = self._item or new_id("item"), None
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
            await self.send(SessionUpdated(session=session_view(self.id, self.settings)))
        elif isinstance(event, LegacySessionUpdate):
            await self._configure(from_legacy(event.session))
            await self.send(
                LegacySessionUpdated(session=legacy_session_view(self.id, self.settings))
            )

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
                self._item = new_id("item")
                await self.send(
                    SpeechStartedEvent(audio_start_ms=event.audio_start_ms, item_id=self._item)
                )
            elif isinstance(event, SpeechStopped):
                item = self._item or new_id("item")
                self._item = item
                await self.send(SpeechStoppedEvent(audio_end_ms=event.audio_end_ms, item_id=item))
            elif isinstance(event, Utterance):
                item, self._item = self._item or new_id("item"), None
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
                if self.meter is not None:
                    await self.meter.admit(self.key_id, self.quota, utterance.duration)
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
                if self.meter is not None:
                    await self.meter.record(
                        self.caller.tenant, self.key_id, prepared.model, "live", utterance.duration
                    )
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
            settings = replace(settings, rate=rate(update.format))
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
            **current.model_dump(exclude_unset=True),  # knobs set by earlier updates stay
            **update.knobs(),
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
