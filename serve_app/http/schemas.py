"""Wire schemas (HTTP bodies) in one place; the routes use them and `/docs` shows them.

Requests reuse the one options type, `serve_app.options.TranscribeOptions`; job views
come from `serve_app.jobs.views`. Internal results are dataclasses (`serve_app.results`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from serve_app.errors import BadRequest
from serve_app.options import ResponseFormat, Task, TranscribeOptions
from serve_app.speaker_options import SPEAKER_FORMATS

Granularity = Literal["word", "segment"]
Include = Literal["logprobs"]
LOGPROB_FORMATS = frozenset({"json", "verbose_json"})
# Formats that show segment times, so their decode needs timestamp tokens.
TIMESTAMPED_FORMATS = frozenset({"srt", "vtt", "verbose_json", "diarized_json"})


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable error code.")
    message: str = Field(description="Human-readable explanation.")


class ErrorBody(BaseModel):
    error: ErrorDetail


class DurationUsage(BaseModel):
    """Usage of a transcription billed by audio length."""

    type: Literal["duration"] = "duration"
    seconds: float = Field(description="Seconds of audio in the request.")


class TokenLogprob(BaseModel):
    """`include[]=logprobs`: one entry per word (faster-whisper's word probability)."""

    token: str
    logprob: float
    bytes: list[int]


class TranscriptionJSON(BaseModel):
    """`response_format=json`."""

    text: str
    logprobs: list[TokenLogprob] | None = None
    usage: DurationUsage | None = None


class WireWord(BaseModel):
    word: str
    start: float
    end: float
    probability: float | None = None
    speaker: str | None = Field(None, description="diarize=true: who said it")
    channel: int | None = Field(None, description="multichannel=true: 0-based input channel")


class WireSegment(BaseModel):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    speaker: str | None = Field(None, description="diarize=true: who said it")
    channel: int | None = Field(None, description="multichannel=true: 0-based input channel")


class DiarizedSegment(BaseModel):
    """One speaker turn (OpenAI's TranscriptionDiarizedSegment)."""

    type: Literal["transcript.text.segment"] = "transcript.text.segment"
    id: str
    start: float
    end: float
    text: str
    speaker: str = Field(description="A known speaker's name, else A, B, … in order of appearance")
    channel: int | None = None


class DiarizedTranscription(BaseModel):
    """`response_format=diarized_json` (OpenAI's shape)."""

    task: Literal["transcribe"] = "transcribe"
    duration: float
    text: str
    segments: list[DiarizedSegment]
    usage: DurationUsage | None = None


class VerboseTranscription(BaseModel):
    """`response_format=verbose_json`: segments (unless only words were asked for), words."""

    task: Literal["transcribe", "translate"]
    language: str
    language_probability: float | None = Field(
        None, description="Probability of the detected language (1.0 when it was given)"
    )
    duration: float
    text: str
    model: str | None = None
    segments: list[WireSegment] | None = None
    words: list[WireWord] | None = None
    logprobs: list[TokenLogprob] | None = None
    usage: DurationUsage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "whisper-serve"
    root: str = Field(description="Canonical model name this id resolves to.")
    multilingual: bool | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    models: dict[str, str] = Field(default_factory=dict)


class TranscriptionForm(TranscribeOptions):
    """The form fields of /v1/audio/transcriptions and /translations besides `file`.

    Unknown fields are ignored, as OpenAI does, so newer clients keep working.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    response_format: ResponseFormat = "json"
    stream: bool = Field(
        False,
        description="Answer with server-sent events (transcript.text.delta as chunks finish, "
        "then transcript.text.done); json, text or verbose_json (adds transcript.text.segment)",
    )
    timestamp_granularities: list[Granularity] | None = Field(
        None,
        alias="timestamp_granularities[]",
        description="word and/or segment; only verbose_json carries timestamps, other formats "
        "ignore the field (as OpenAI does)",
    )
    include: list[Include] | None = Field(
        None,
        alias="include[]",
        description="logprobs: per-word log probabilities in json and verbose_json",
    )

    @property
    def granularities(self) -> frozenset[str]:
        """The granularities that apply: only verbose_json carries timestamps."""
        if self.response_format != "verbose_json":
            return frozenset()
        return frozenset(self.timestamp_granularities or ())

    @property
    def logprobs(self) -> bool:
        return "logprobs" in (self.include or ()) and self.response_format in LOGPROB_FORMATS

    @model_validator(mode="before")
    @classmethod
    def _diarizing_format(cls, data: object) -> object:
        # diarized_json is the diarizing format (as OpenAI's): it implies diarize=true.
        if isinstance(data, dict) and data.get("response_format") == "diarized_json":
            return {**data, "diarize": True}
        return data

    @field_validator("known_speaker_references", mode="before")
    @classmethod
    def _files_apart(cls, value: object) -> object:
        # Uploaded clips are read by the route (`uploaded_references`) and replace these
        # placeholders in `options()`; they only keep the count of clips here.
        items = value if isinstance(value, list | tuple) else [value]
        return [v if isinstance(v, str) else "upload" for v in items]

    def options(self, task: Task, references: list[str] | None = None) -> TranscribeOptions:
        """The transcription options this form asks for (timestamps follow the format);
        `references`: the known speakers' clips when they came as files."""
        grains = self.granularities
        fields = self.model_dump(include=set(TranscribeOptions.model_fields))
        if (self.diarize or self.multichannel) and self.response_format not in SPEAKER_FORMATS:
            raise BadRequest(
                f"response_format {self.response_format} cannot carry speakers or channels; "
                f"use one of {', '.join(SPEAKER_FORMATS)}"
            )
        fields.update(
            task=task,
            known_speaker_references=(
                self.known_speaker_references if references is None else references
            ),
            # Word probabilities come from the word alignment.
            word_timestamps=self.word_timestamps or "word" in grains or self.logprobs,
            segment_timestamps=self.response_format in TIMESTAMPED_FORMATS,
        )
        return TranscribeOptions.parse(fields)


# ---- stream=true: server-sent events (OpenAI's transcript.text.* shapes) -------------------

STREAM_FORMATS = frozenset({"json", "text", "verbose_json"})


class TranscriptTextDelta(BaseModel):
    """More text, in audio order; the deltas of one stream join into the done event's text."""

    type: Literal["transcript.text.delta"] = "transcript.text.delta"
    delta: str


class TranscriptTextSegment(BaseModel):
    """A finished segment with its times in the audio (response_format=verbose_json)."""

    type: Literal["transcript.text.segment"] = "transcript.text.segment"
    id: str
    start: float
    end: float
    text: str
    words: list[WireWord] | None = None


class TranscriptTextDone(BaseModel):
    """The last event of a successful stream: the whole text."""

    type: Literal["transcript.text.done"] = "transcript.text.done"
    text: str
    usage: DurationUsage


class StreamErrorDetail(BaseModel):
    type: str = Field(description="invalid_request_error, rate_limit_error or server_error.")
    code: str = Field(description="The same stable code as the JSON error bodies.")
    message: str
    event_id: str | None = Field(None, description="The client event that caused it, if any.")


class StreamError(BaseModel):
    """Ends a stream that failed after it started (no done event follows)."""

    type: Literal["error"] = "error"
    error: StreamErrorDetail


class JobRequest(TranscribeOptions):
    """POST /v1/jobs: the transcription options plus the job's own fields.

    As JSON it names its audio by `url` or `upload_id`; as multipart the audio is the
    `file` part and these are form fields.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    segment_timestamps: bool = Field(
        True,
        description="Decode with timestamp tokens, so that srt, vtt and verbose_json results "
        "have per-sentence times; false decodes as BatchedInferencePipeline does by default "
        "(one segment per VAD chunk)",
    )
    url: str | None = Field(None, max_length=4096, description="Audio to fetch (https)")
    upload_id: str | None = Field(None, max_length=64, description="From POST /v1/uploads")
    priority: int | None = Field(None, ge=0, le=9, description="Higher runs first")
    webhook_url: str | None = Field(None, max_length=2048)
    metadata: dict[str, Any] = Field(default_factory=dict)

    def options(self) -> TranscribeOptions:
        """The transcription options alone, as the job stores them."""
        return TranscribeOptions.model_validate(
            self.model_dump(include=set(TranscribeOptions.model_fields))
        )


# ---- /v1/vocabularies (issue 15) ---------------------------------------------------------

Phrase = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class CustomSpelling(BaseModel):
    """Every phrase of `from` (case-insensitive, whole words) is written as `to`."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    sources: list[Phrase] = Field(alias="from", min_length=1, max_length=10)
    to: Phrase


class VocabularyCreate(BaseModel):
    """POST /v1/vocabularies: at most 50 terms (800 characters) and 100 spellings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Phrase
    terms: list[Phrase] = Field(
        default_factory=list, max_length=50, description="Decoded as hotwords"
    )
    spellings: list[CustomSpelling] = Field(default_factory=list, max_length=100)

    @field_validator("terms")
    @classmethod
    def _terms_fit_the_prompt(cls, terms: list[str]) -> list[str]:
        if sum(len(t) + 1 for t in terms) > 800:
            raise ValueError("terms may hold at most 800 characters together")
        return terms


class VocabularyView(BaseModel):
    id: str
    object: Literal["vocabulary"] = "vocabulary"
    name: str
    terms: list[str]
    spellings: list[CustomSpelling]
    created_at: datetime


class VocabularyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VocabularyView]


class UploadTicket(BaseModel):
    """POST /v1/uploads: a presigned S3 POST for a job's audio."""

    upload_id: str
    method: Literal["POST"] = "POST"
    url: str
    fields: dict[str, str]
    expires_at: datetime
    max_bytes: int


ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Bad parameters or empty file",
        401: "Missing or invalid API key (when auth is on)",
        404: "Not found (also another tenant's job)",
        408: "The request body stopped arriving (limits.body_idle_timeout_s)",
        409: "Conflict (idempotency key reused, or no result yet)",
        413: "Upload or audio too large",
        415: "Not an audio file",
        422: "Audio could not be decoded",
        429: "Rate limit, concurrency or upload quota exceeded; see Retry-After",
        503: "Overloaded, or a backend is down (backend_unavailable; see Retry-After)",
    }.items()
}


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema with its `$defs` inlined, for a hand-written request body.

    FastAPI hoists `$defs` only for the bodies it derives itself; inside `openapi_extra` a
    `#/$defs/...` reference points nowhere in the OpenAPI document, and ReDoc refuses it.
    """
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
