"""The seam between the callers (ingress, tracker) and a model replica.

`ModelClient` is what the transcription pipeline calls on one model size. Behind it is a
Ray Serve Transcriber deployment (`serve_app.pipeline.clients.RayModelClient`) or, in tests
and notebooks, the same replica code in-process (`serve_app.testing.LocalModelClient`).
Everything that crosses it is a dataclass, pickled by Ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from serve_app.config import BatchSettings
from serve_app.options import DecodeOptions
from serve_app.results import LanguageGuess, Segment


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
    pack: bool = True  # may share a window with this tenant's other short chunks
    # Batch formation hint: the sending service, and how many more chunks it is about to
    # send this replica's model (None: the caller cannot say).
    source: str = ""
    incoming: int | None = None
    # The sender's count of hints given: concurrent calls reach a replica in any order,
    # and only the newest word of a source counts.
    hint_seq: int = 0


@dataclass
class ChunkResult:
    """Segments of one chunk; times are in the request's VAD-collapsed timeline."""

    segments: list[Segment]
    batch_size: int = 1
    replica: str = ""
    window_clips: int = 1  # chunks that shared this chunk's 30 s window
    queue_s: float = 0.0  # time in the replica's queue
    batch_s: float = 0.0  # wall time of the batch that decoded it


@dataclass(frozen=True)
class Placement:
    """Where a replica runs: its Ray node and the resources Ray assigned it."""

    node_id: str
    assigned_resources: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplicaInfo:
    """What a model replica is: its model's capabilities and where it runs."""

    name: str
    multilingual: bool
    languages: tuple[str, ...]
    device: str
    compute_type: str
    gpu_ids: tuple[str, ...] = ()
    replica: str = ""
    node_id: str = ""
    assigned_resources: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplicaStats:
    """A replica's batching counters since it started."""

    replica: str
    batches: int
    batch_sizes: dict[int, int]
    queued: int
    settings: BatchSettings
    packing: bool
    clips_per_window: dict[int, int]
    packed_fallbacks: int


class ModelClient(Protocol):
    """What the ingress and the tracker call on one model size's replicas."""

    async def transcribe_chunk(self, chunk: ChunkRequest) -> ChunkResult: ...

    async def detect_language(self, chunks: Sequence[np.ndarray]) -> LanguageGuess: ...

    async def describe(self) -> ReplicaInfo: ...

    async def stats(self) -> ReplicaStats: ...
