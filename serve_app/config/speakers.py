"""Config of speaker diarization: the SpeakerEmbedder deployment and the clustering."""

from __future__ import annotations

from pydantic import Field, model_validator

from serve_app.config.base import _Strict
from serve_app.config.models import AutoscalingSettings


class SpeakerEmbedderConfig(_Strict):
    """The SpeakerEmbedder deployment: GE2E embeddings, batched across requests."""

    enabled: bool = Field(True, description="Deploy it; diarize=true is refused (400) without.")
    weights: str | None = Field(
        None, description="Path of a GE2E checkpoint; default: resemblyzer's pretrained.pt."
    )
    num_cpus: float = Field(0.1, gt=0.0, le=64.0, description="CPU share per replica.")
    num_gpus: float = Field(
        0.0, ge=0.0, le=1.0, description="GPU share per replica (the numpy encoder uses none)."
    )
    nice: int = Field(
        10, ge=0, le=19, description="Niceness added to the replica, as `models[].nice`."
    )
    max_ongoing_requests: int = Field(16, ge=1, le=1024)
    max_batch_size: int = Field(
        8, ge=1, le=256, description="Calls (of up to 32 clips each) run through one batch."
    )
    batch_wait_timeout_s: float = Field(0.01, ge=0.0, le=5.0)
    autoscaling: AutoscalingSettings = Field(
        default_factory=lambda: AutoscalingSettings(target_ongoing_requests=4.0)
    )

    @property
    def deployment_name(self) -> str:
        return "SpeakerEmbedder"


class DiarizationConfig(_Strict):
    """Windows, clustering and reference-clip limits (applied in the ingress and tracker)."""

    window_s: float = Field(1.6, ge=0.5, le=5.0, description="Audio per embedded window.")
    # Steps of 0.8, 1.0, 1.2 and 1.6 s gave the same DER on the generated conversations; each
    # window is one LSTM pass, so the step sets the embedding cost (benchmarks/diarize.py).
    hop_s: float = Field(1.6, ge=0.1, le=5.0, description="Step between windows.")
    min_window_s: float = Field(0.4, ge=0.1, le=5.0, description="Shorter speech is skipped.")
    threshold: float = Field(
        0.1,
        ge=-1.0,
        le=1.0,
        description="Clusters merge while their (mean-centred) cosine similarity is above "
        "this, when the speaker count is not given.",
    )
    same_voice_gap: float = Field(
        0.12,
        ge=0.0,
        le=2.0,
        description="Without a speaker count, two clusters are one voice when their raw "
        "(uncentred) similarity across is within this of their similarity inside.",
    )
    min_cluster: float = Field(
        0.05, ge=0.0, le=0.5, description="Clusters with fewer windows than this share fold in."
    )
    max_speakers: int = Field(8, ge=1, le=32, description="Most speakers found without a count.")
    reference_similarity: float = Field(
        0.0, ge=-1.0, le=1.0, description="Least similarity for a known speaker's name."
    )
    max_references: int = Field(4, ge=0, le=16, description="known_speaker_references cap.")
    max_reference_bytes: int = Field(
        2 * 1024 * 1024, ge=1024, description="Size cap of one reference clip (413 above)."
    )
    max_reference_s: float = Field(30.0, gt=0, description="Decoded length cap of one clip.")

    @model_validator(mode="after")
    def _hop(self) -> DiarizationConfig:
        if self.hop_s > self.window_s:
            raise ValueError("diarization.hop_s must be <= window_s")
        return self
