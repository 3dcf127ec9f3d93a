"""Transcripts: the dataclasses a transcription returns to HTTP, handle and job callers.

Plain dataclasses (as in faster-whisper): they cross Ray process boundaries by pickle,
every result carries the options that produced it, and jobs store them as JSON through
one pydantic `TypeAdapter` (no hand-written converters).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from pydantic import TypeAdapter

from serve_app.options import DecodeOptions


@dataclass
class Word:
    start: float
    end: float
    word: str
    probability: float
    speaker: str | None = None  # diarize=true
    channel: int | None = None  # multichannel=true: 0-based input channel


@dataclass
class Segment:
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    temperature: float
    words: list[Word] | None = None
    speaker: str | None = None
    channel: int | None = None


@dataclass
class LanguageGuess:
    language: str
    probability: float


@dataclass
class TranscriptionResult:
    """What a transcription returns, to HTTP, handle and job callers alike."""

    text: str
    language: str
    language_probability: float
    duration: float
    duration_after_vad: float
    segments: list[Segment]
    model: str
    options: DecodeOptions
    chunks: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    window_clips: list[int] = field(default_factory=list)  # per chunk: clips in its window
    # Where the time went, phase -> seconds: decode, vad, language, chunks (all chunks
    # through the batcher), queue and batch (of the slowest chunk), assemble.
    timings: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in (s.words or [])]

    def to_json(self) -> bytes:
        return _adapter().dump_json(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> TranscriptionResult:
        return _adapter().validate_json(data)


@cache
def _adapter() -> TypeAdapter[TranscriptionResult]:
    return TypeAdapter(TranscriptionResult)


@cache
def segments_adapter() -> TypeAdapter[list[Segment]]:
    """Validates stored segment lists (job checkpoints) back into dataclasses."""
    return TypeAdapter(list[Segment])
