"""Internal request/result types shared by the ingress, the transcribers and the job system.

Plain dataclasses (as in faster-whisper): they cross Ray process boundaries by pickle and
every result carries the options that produced it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

Task = Literal["transcribe", "translate"]


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


@dataclass(frozen=True)
class TranscribeRequest:
    """A caller's transcription request minus the audio (HTTP, handle and job callers)."""

    model: str | None = None
    task: Task = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    beam_size: int = 5
    word_timestamps: bool = False
    segment_timestamps: bool = False
    priority: int = 10  # interactive default; background jobs use lower values
    tenant: str = "default"
    pack: bool = True  # may short chunks share a window with this tenant's other chunks

    def decode_options(self) -> DecodeOptions:
        return DecodeOptions(
            task=self.task,
            language=self.language,
            beam_size=self.beam_size,
            temperature=self.temperature,
            initial_prompt=self.prompt or None,
            word_timestamps=self.word_timestamps,
            without_timestamps=not self.segment_timestamps,
        )


@dataclass
class ChunkRequest:
    """One ≤30 s VAD chunk of one request, sent to a Transcriber replica."""

    audio: np.ndarray
    offset: float  # seconds, in the request's speech-only (VAD-collapsed) timeline
    duration: float
    options: DecodeOptions
    priority: int = 0  # higher first: interactive requests outrank background jobs
    tenant: str = "default"
    request_id: str = ""
    index: int = 0
    packable: bool = True


@dataclass
class Word:
    start: float
    end: float
    word: str
    probability: float


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


@dataclass
class ChunkResult:
    """Segments of one chunk; times are in the request's VAD-collapsed timeline."""

    segments: list[Segment]
    batch_size: int = 1
    replica: str = ""
    window_clips: int = 1  # chunks that shared this chunk's 30 s window


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

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in (s.words or [])]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TranscriptionResult:
        segments = [
            Segment(**{**s, "words": [Word(**w) for w in s["words"]] if s.get("words") else None})
            for s in data["segments"]
        ]
        return cls(
            **{
                **data,
                "segments": segments,
                "options": DecodeOptions(**data["options"]),
            }
        )
