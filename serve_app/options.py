"""The one options type: what a caller asks of a transcription, validated once.

`TranscribeOptions` is a pydantic model used as it is by the HTTP form, the jobs JSON, the
handle API and the job store (jobs keep `model_dump()` and load it back with the same
class). `DecodeOptions` is what the model replica batches by: the subset that changes the
decode, with the language settled. `Caller` is who asks and how urgently, which decides
scheduling but never the decode.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

Task = Literal["transcribe", "translate"]
ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
RESPONSE_FORMATS: tuple[str, ...] = get_args(ResponseFormat)

# Higher runs first in the replica's batcher: live and interactive calls outrank jobs (0-9).
INTERACTIVE_PRIORITY = 10
# Utterances of realtime sessions (/v1/realtime): someone is waiting on every word.
LIVE_PRIORITY = 20


@dataclass(frozen=True)
class DecodeOptions:
    """Decode options that must match for chunks to share one batched generate call."""

    task: Task = "transcribe"
    language: str | None = None
    beam_size: int = 5
    temperature: float = 0.0
    initial_prompt: str | None = None
    word_timestamps: bool = False
    without_timestamps: bool = True

    def batch_key(self) -> str:
        """Stable key; chunks with equal keys may be decoded together."""
        payload = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:16]

    def with_language(self, language: str) -> DecodeOptions:
        return replace(self, language=language)


class TranscribeOptions(BaseModel):
    """A caller's transcription options (everything but the audio and the caller)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = Field(None, max_length=128, description="Model id, e.g. tiny.en or base")
    task: Task = Field("transcribe", description="transcribe, or translate into English")
    language: str | None = Field(
        None, max_length=16, description="ISO 639-1 code; detected from the audio when unset"
    )
    prompt: str | None = Field(
        None, max_length=2000, description="Text that conditions the decoder (initial_prompt)"
    )
    temperature: float = Field(0.0, ge=0.0, le=1.0, description="Sampling temperature")
    beam_size: int = Field(5, ge=1, le=10, description="Beam width (faster-whisper beam_size)")
    word_timestamps: bool = Field(False, description="Align every word to the audio")
    segment_timestamps: bool = Field(
        False, description="Decode with timestamp tokens (needed by srt, vtt, verbose_json)"
    )
    pack: bool = Field(
        True, description="Let short chunks share a 30 s window with this tenant's other chunks"
    )

    @field_validator("model", "prompt", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("language", mode="before")
    @classmethod
    def _normalise_language(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip().lower() or None
        return value

    def decode_options(self) -> DecodeOptions:
        return DecodeOptions(
            task=self.task,
            language=self.language,
            beam_size=self.beam_size,
            temperature=self.temperature,
            initial_prompt=self.prompt,
            word_timestamps=self.word_timestamps,
            without_timestamps=not self.segment_timestamps,
        )


@dataclass(frozen=True)
class Caller:
    """Who asks and how urgently: decides scheduling and packing, never the decode."""

    tenant: str = "default"
    priority: int = INTERACTIVE_PRIORITY
