"""The `/v1/realtime` protocol: client and server events as pydantic models.

Parsing (`decode_event`, `validate_event`) and the conversions between the wire shapes and
a session's settings live here; the session itself is `realtime_session.py`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serve_app.errors import (
    InvalidEvent,
    UnknownEvent,
    UnsupportedAudioFormat,
)
from serve_app.http.errors import validation_summary
from serve_app.http.schemas import DurationUsage, StreamErrorDetail
from serve_app.options import TranscribeOptions
from serve_app.pipeline.live import (
    INPUT_RATES,
    ServerVad,
)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


# ---- client events ------------------------------------------------------------------------


class _Lenient(BaseModel):
    """Fields this server does not use (noise reduction, include, …) are ignored."""

    model_config = ConfigDict(extra="ignore")


class AudioFormat(_Lenient):
    type: str = Field("audio/pcm", description="audio/pcm (16-bit little-endian mono)")
    rate: int | None = Field(None, description="24000 (OpenAI's) or 16000")


# Decode knobs a session may also set in `transcription` (this server's extension; the
# names and limits are the `/v1/audio/transcriptions` fields of `TranscribeOptions`).
LIVE_OPTIONS = (
    "task",
    "hotwords",
    "vocabulary",
    "temperature",
    "temperature_fallback",
    "beam_size",
    "best_of",
    "patience",
    "length_penalty",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "compression_ratio_threshold",
    "log_prob_threshold",
    "no_speech_threshold",
    "suppress_blank",
    "suppress_tokens",
    "max_new_tokens",
)


class TranscriptionSettings(_Lenient):
    """`transcription` of a session: OpenAI's model, language and prompt, plus any of
    `LIVE_OPTIONS` (other unknown fields are ignored, as OpenAI's clients send more)."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, description="A model id of this service, e.g. whisper-1")
    language: str | None = None
    prompt: str | None = None

    def knobs(self) -> dict[str, object]:
        """The `LIVE_OPTIONS` this update sets."""
        extra = self.model_extra or {}
        return {name: extra[name] for name in LIVE_OPTIONS if name in extra}


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
    event_id: str = Field(default_factory=lambda: new_id("event"))


class FormatView(BaseModel):
    type: Literal["audio/pcm"] = "audio/pcm"
    rate: int


class TranscriptionView(BaseModel):
    """The session's transcription settings: OpenAI's three, then the knobs set so far."""

    model_config = ConfigDict(extra="allow")

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


def rate(fmt: AudioFormat | None) -> int:
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


def from_legacy(session: LegacySessionConfig) -> AudioInput:
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


def vad_view(vad: ServerVad | None) -> TurnDetectionView | None:
    if vad is None:
        return None
    return TurnDetectionView(
        threshold=vad.threshold,
        prefix_padding_ms=vad.prefix_padding_ms,
        silence_duration_ms=vad.silence_duration_ms,
    )


@dataclass(frozen=True)
class SessionSettings:
    """A session's effective settings: input format, turn detection, transcription options."""

    rate: int
    vad: ServerVad | None
    model: str  # the id the client chose (or the default model's name)
    options: TranscribeOptions


def session_view(session_id: str, settings: SessionSettings) -> SessionView:
    """The session as `session.created` / `session.updated` describe it."""
    return SessionView(
        id=session_id,
        audio=AudioView(
            input=AudioInputView(
                format=FormatView(rate=settings.rate),
                transcription=_transcription_view(settings),
                turn_detection=vad_view(settings.vad),
            )
        ),
    )


def legacy_session_view(session_id: str, settings: SessionSettings) -> LegacySessionView:
    """The session as the older `transcription_session.updated` describes it."""
    return LegacySessionView(
        id=session_id,
        input_audio_format="pcm16" if settings.rate == 24000 else f"pcm16_{settings.rate}",
        input_audio_transcription=_transcription_view(settings),
        turn_detection=vad_view(settings.vad),
    )


def _transcription_view(settings: SessionSettings) -> TranscriptionView:
    options = settings.options
    knobs = options.model_dump(include=set(LIVE_OPTIONS), exclude_unset=True, mode="json")
    return TranscriptionView(
        model=settings.model, language=options.language, prompt=options.prompt, **knobs
    )
