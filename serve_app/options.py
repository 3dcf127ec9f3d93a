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
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from serve_app.errors import BadRequest
from serve_app.form_values import split_list, unbracket
from serve_app.speaker_options import SpeakerOptions

Task = Literal["transcribe", "translate"]
ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json", "diarized_json"]
RESPONSE_FORMATS: tuple[str, ...] = get_args(ResponseFormat)

# Higher runs first in the replica's batcher: live and interactive calls outrank jobs (0-9).
INTERACTIVE_PRIORITY = 10
# Utterances of realtime sessions (/v1/realtime): someone is waiting on every word.
LIVE_PRIORITY = 20


# Whisper's text vocabularies have at most 51866 tokens (large-v3); -1 means "the default set".
_MAX_TOKEN_ID = 51865


@dataclass(frozen=True)
class DecodeOptions:
    """Decode options that must match for chunks to share one batched generate call.

    Only what changes the tokens or the segments a chunk decodes to belongs here: every
    field is part of `batch_key`, so an option that does not change the decode must live
    elsewhere (`VadSettings`, `FallbackPolicy`, `ChunkRequest.pack`) or it would split batches.
    """

    task: Task = "transcribe"
    language: str | None = None
    beam_size: int = 5
    temperature: float = 0.0
    initial_prompt: str | None = None
    word_timestamps: bool = False
    without_timestamps: bool = True
    hotwords: str | None = None
    patience: float = 1.0
    length_penalty: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    suppress_blank: bool = True
    suppress_tokens: tuple[int, ...] = (-1,)
    max_new_tokens: int | None = None

    def batch_key(self) -> str:
        """Stable key; chunks with equal keys may be decoded together."""
        payload = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:16]

    def with_language(self, language: str) -> DecodeOptions:
        return replace(self, language=language)


@dataclass(frozen=True)
class VadSettings:
    """Silero VAD settings for cutting chunks (faster-whisper `VadOptions`; in the ingress)."""

    threshold: float = 0.5
    speech_pad_ms: int = 400
    min_silence_duration_ms: int = 160


@dataclass(frozen=True)
class FallbackPolicy:
    """Per-chunk quality checks applied after decoding (in the ingress, not the batch key).

    A chunk that fails `compression_ratio_threshold` or `log_prob_threshold` is decoded
    again at the next of `temperatures`; one whose `no_speech_prob` exceeds
    `no_speech_threshold` (with a low log probability) counts as silence and is dropped,
    as `WhisperModel.transcribe` does. All unset by default, as `BatchedInferencePipeline`
    does not apply them.
    """

    temperatures: tuple[float, ...] = ()
    compression_ratio_threshold: float | None = None
    log_prob_threshold: float | None = None
    no_speech_threshold: float | None = None

    @property
    def active(self) -> bool:
        return any(
            t is not None
            for t in (
                self.compression_ratio_threshold,
                self.log_prob_threshold,
                self.no_speech_threshold,
            )
        )


class ServerVadChunking(BaseModel):
    """OpenAI's `chunking_strategy={"type": "server_vad", …}`, mapped onto Silero VAD."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["server_vad"] = "server_vad"
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="Speech probability threshold")
    prefix_padding_ms: int = Field(
        400, ge=0, le=5000, description="Audio kept around speech (VAD speech_pad_ms)"
    )
    silence_duration_ms: int = Field(
        160, ge=0, le=10_000, description="Silence that ends speech (min_silence_duration_ms)"
    )


class TranscribeOptions(SpeakerOptions):
    """A caller's transcription options (everything but the audio and the caller).

    Defaults are `BatchedInferencePipeline.transcribe`'s, except `temperature` (a single
    0.0: the batched pipeline decodes with the first temperature only).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = Field(None, max_length=128, description="Model id, e.g. tiny.en or base")
    task: Task = Field("transcribe", description="transcribe, or translate into English")
    language: str | None = Field(
        None, max_length=16, description="ISO 639-1 code; detected from the audio when unset"
    )
    prompt: str | None = Field(
        None, max_length=2000, description="Text that conditions the decoder (initial_prompt)"
    )
    hotwords: str | None = Field(
        None,
        max_length=1000,
        description="Words or phrases the decoder should expect: product names, jargon "
        "(faster-whisper hotwords)",
    )
    vocabulary: str | None = Field(
        None,
        max_length=64,
        description="Id of one of the tenant's vocabularies (POST /v1/vocabularies): its "
        "terms are added to hotwords and its spellings rewrite the text and words",
    )
    temperature: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Sampling temperature of the first decode; a list (faster-whisper style) "
        "sets temperature to its first value and temperature_fallback to the rest",
    )
    temperature_fallback: tuple[float, ...] = Field(
        (),
        max_length=10,
        description="Temperatures (0-1) tried in order when a chunk fails "
        "compression_ratio_threshold or log_prob_threshold",
    )
    beam_size: int = Field(5, ge=1, le=10, description="Beam width (faster-whisper beam_size)")
    best_of: int = Field(
        5,
        ge=1,
        le=10,
        description="Candidates when sampling; accepted for compatibility, no effect in "
        "batched decoding (as in BatchedInferencePipeline)",
    )
    patience: float = Field(1.0, gt=0.0, le=10.0, description="Beam search patience factor")
    length_penalty: float = Field(
        1.0, ge=0.0, le=10.0, description="Exponential length penalty constant"
    )
    repetition_penalty: float = Field(
        1.0, gt=0.0, le=10.0, description="Penalty on tokens already generated (>1 penalises)"
    )
    no_repeat_ngram_size: int = Field(
        0, ge=0, le=100, description="Forbid repeating n-grams of this size (0: off)"
    )
    compression_ratio_threshold: float | None = Field(
        None,
        gt=0.0,
        le=100.0,
        description="Decode a chunk again at the next fallback temperature when its gzip "
        "compression ratio is above this (faster-whisper uses 2.4); unset: not checked",
    )
    log_prob_threshold: float | None = Field(
        None,
        ge=-100.0,
        le=0.0,
        description="Decode a chunk again when its average log probability is below this "
        "(faster-whisper uses -1.0); unset: not checked",
    )
    no_speech_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Drop a chunk as silence when its no-speech probability is above this "
        "and its log probability below log_prob_threshold (faster-whisper uses 0.6)",
    )
    condition_on_previous_text: bool = Field(
        False,
        description="Accepted for compatibility; chunks decode in parallel, so no effect "
        "(BatchedInferencePipeline forces it off)",
    )
    suppress_blank: bool = Field(True, description="Suppress blank outputs at the start")
    suppress_tokens: tuple[int, ...] = Field(
        (-1,),
        max_length=1000,
        description="Token ids never generated; -1 adds the default set of symbols",
    )
    max_new_tokens: int | None = Field(
        None,
        ge=1,
        le=440,
        description="Most tokens generated per chunk (capped so prompt + tokens fit 448)",
    )
    vad_filter: bool = Field(
        True,
        description="Cut the audio at speech with Silero VAD; false: fixed 30 s windows",
    )
    chunking_strategy: Literal["auto"] | ServerVadChunking | None = Field(
        None,
        description='OpenAI chunking: "auto" (the default VAD) or {"type": "server_vad", '
        '"threshold", "prefix_padding_ms", "silence_duration_ms"}',
    )
    word_timestamps: bool = Field(False, description="Align every word to the audio")
    segment_timestamps: bool = Field(
        False, description="Decode with timestamp tokens (needed by srt, vtt, verbose_json)"
    )
    pack: bool = Field(
        True, description="Let short chunks share a 30 s window with this tenant's other chunks"
    )

    @model_validator(mode="before")
    @classmethod
    def _form_shapes(cls, data: object) -> object:
        # Multipart clients (the openai SDK's extra_body) send lists as `name[]` and
        # objects as `name[key]`; faster-whisper takes `temperature=[0.0, 0.2, …]`.
        if not isinstance(data, dict):
            return data
        aliases = {f.alias for f in cls.model_fields.values() if f.alias}
        data = unbracket(data, set(cls.model_fields), aliases)
        value = split_list(data.get("temperature")) if "temperature" in data else None
        if isinstance(value, list | tuple):
            if not value:
                raise ValueError("temperature: give at least one value")
            data = {**data, "temperature": value[0]}
            if len(value) > 1 and not data.get("temperature_fallback"):
                data["temperature_fallback"] = list(value[1:])
        return data

    @field_validator(
        "model", "prompt", "hotwords", "vocabulary", "chunking_strategy", mode="before"
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("chunking_strategy", mode="before")
    @classmethod
    def _chunking_json(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().startswith("{"):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    @field_validator("temperature_fallback", mode="before")
    @classmethod
    def _list_field(cls, value: object) -> object:
        return split_list(value)

    @field_validator("suppress_tokens", mode="before")
    @classmethod
    def _token_list(cls, value: object) -> object:
        return [] if value == "" else split_list(value)

    @field_validator("temperature_fallback")
    @classmethod
    def _temperatures_in_range(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0.0 <= t <= 1.0 for t in value):
            raise ValueError("every temperature must be between 0 and 1")
        return value

    @field_validator("suppress_tokens")
    @classmethod
    def _tokens_in_range(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(not -1 <= t <= _MAX_TOKEN_ID for t in value):
            raise ValueError(f"token ids must be -1 or between 0 and {_MAX_TOKEN_ID}")
        return value

    @field_validator("language", mode="before")
    @classmethod
    def _normalise_language(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip().lower() or None
        return value

    @model_validator(mode="after")
    def _vad_consistent(self) -> TranscribeOptions:
        if not self.vad_filter and isinstance(self.chunking_strategy, ServerVadChunking):
            raise ValueError("chunking_strategy: server_vad needs vad_filter=true")
        return self

    @classmethod
    def parse(cls, fields: Mapping[str, Any]) -> Self:
        """Validate handle kwargs or stored fields; a bad value is a 400 naming the field."""
        try:
            return cls.model_validate(dict(fields))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg']}"
                for e in exc.errors()[:5]
            )
            raise BadRequest(f"invalid options: {problems}") from exc

    def decode_options(self) -> DecodeOptions:
        return DecodeOptions(
            task=self.task,
            language=self.language,
            beam_size=self.beam_size,
            temperature=self.temperature,
            initial_prompt=self.prompt,
            # Speakers are put on words: diarization needs them aligned.
            word_timestamps=self.word_timestamps or self.diarize,
            without_timestamps=not (self.segment_timestamps or self.diarize),
            hotwords=self.hotwords,
            patience=self.patience,
            length_penalty=self.length_penalty,
            repetition_penalty=self.repetition_penalty,
            no_repeat_ngram_size=self.no_repeat_ngram_size,
            suppress_blank=self.suppress_blank,
            suppress_tokens=self.suppress_tokens,
            max_new_tokens=self.max_new_tokens,
        )

    def vad_settings(self) -> VadSettings | None:
        """How the ingress cuts chunks; None: fixed 30 s windows without VAD."""
        if not self.vad_filter:
            return None
        strategy = self.chunking_strategy
        if isinstance(strategy, ServerVadChunking):
            return VadSettings(
                threshold=strategy.threshold,
                speech_pad_ms=strategy.prefix_padding_ms,
                min_silence_duration_ms=strategy.silence_duration_ms,
            )
        return VadSettings()

    def fallback_policy(self) -> FallbackPolicy:
        return FallbackPolicy(
            temperatures=self.temperature_fallback,
            compression_ratio_threshold=self.compression_ratio_threshold,
            log_prob_threshold=self.log_prob_threshold,
            no_speech_threshold=self.no_speech_threshold,
        )


@dataclass(frozen=True)
class Caller:
    """Who asks and how urgently: decides scheduling and packing, never the decode."""

    tenant: str = "default"
    priority: int = INTERACTIVE_PRIORITY
