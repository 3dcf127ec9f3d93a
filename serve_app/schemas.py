"""Wire schemas (HTTP bodies) in one place; internal types live in `results.py`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable error code.")
    message: str = Field(description="Human-readable explanation.")


class ErrorBody(BaseModel):
    error: ErrorDetail


class TranscriptionJSON(BaseModel):
    text: str


class WireWord(BaseModel):
    word: str
    start: float
    end: float
    probability: float | None = None


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


class VerboseTranscription(BaseModel):
    task: Literal["transcribe", "translate"]
    language: str
    duration: float
    text: str
    model: str | None = None
    segments: list[WireSegment] | None = None
    words: list[WireWord] | None = None


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


ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Bad parameters or empty file",
        401: "Missing or invalid API key (when auth is on)",
        404: "Not found (also another tenant's job)",
        409: "Conflict (idempotency key reused, or no result yet)",
        413: "Upload or audio too large",
        415: "Not an audio file",
        422: "Audio could not be decoded",
        429: "Rate limit or concurrency quota exceeded; see Retry-After",
        503: "Overloaded or a backend is down",
    }.items()
}
