"""Config of one model size: its deployment, batching, window packing and autoscaling."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from serve_app.config.base import _Strict

MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class BatchSettings(_Strict):
    """Cross-request batching knobs; live-tunable through the Transcriber's `user_config`."""

    max_batch_size: int = Field(8, ge=1, le=64, description="Most chunks in one generate call.")
    batch_wait_timeout_s: float = Field(
        0.05,
        ge=0.0,
        le=5.0,
        description="How long a non-full batch waits for more chunks before it runs, when "
        "the callers gave no word of what is coming.",
    )
    max_linger_s: float = Field(
        0.2,
        ge=0.0,
        le=10.0,
        description="How long a non-full batch may wait for chunks its callers said are on "
        "their way (requests still decoding, chunks not yet sent); it runs at once when they "
        "said nothing more is coming.",
    )
    busy_background_batch_size: int = Field(
        4,
        ge=1,
        le=64,
        description="Most chunks in a background (job) batch while interactive or live chunks "
        "arrived or were answered in the last busy_window_s: a running batch cannot be "
        "interrupted, so this bounds how long an interactive chunk waits behind a job's batch.",
    )
    busy_window_s: float = Field(
        1.0, ge=0.0, le=60.0, description="How long interactive traffic counts as present."
    )


class PackingSettings(_Strict):
    """Window packing: short chunks of one tenant share a 30 s Whisper window."""

    mode: Literal["auto", "on", "off"] = Field(
        "auto", description="auto = on for CPU replicas, off on GPU until measured there."
    )
    max_clip_s: float = Field(
        20.0, gt=0, le=28, description="Only chunks at most this long are packed."
    )
    # 24 s with 1.5 s gaps kept mean WER at or below one-window-per-clip on our speech sets
    # (28 s / 1 s was faster but lost up to 0.025 WER); see benchmarks/README.md.
    window_s: float = Field(24.0, gt=0, le=30, description="Audio per packed window.")
    gap_s: float = Field(1.5, ge=0.2, le=5, description="Silence between packed clips.")


class AutoscalingSettings(_Strict):
    """Maps onto Ray Serve's `autoscaling_config` for one model deployment."""

    min_replicas: int = Field(1, ge=0, le=1000)
    max_replicas: int = Field(1, ge=1, le=1000)
    initial_replicas: int | None = Field(None, ge=0, le=1000)
    target_ongoing_requests: float = Field(
        8.0, gt=0, description="Chunks in flight per replica; size it to the batch size."
    )
    upscale_delay_s: float = Field(10.0, ge=0)
    downscale_delay_s: float = Field(120.0, ge=0)
    metrics_interval_s: float = Field(2.0, gt=0)
    look_back_period_s: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})"
            )
        if self.initial_replicas is not None and not (
            self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError("initial_replicas must lie between min_replicas and max_replicas")
        return self

    def to_serve(self) -> dict[str, Any]:
        out = self.model_dump(exclude_none=True)
        return out


class ModelConfig(_Strict):
    """One model size = one Transcriber deployment."""

    name: str = Field(description="Public model id, e.g. 'tiny.en' or 'base'.")
    weights: str | None = Field(
        None,
        description="'bundled:<name>', a local directory or an s3://bucket/prefix; "
        "defaults to bundled:<name>.",
    )
    aliases: list[str] = Field(default_factory=list, description="Extra ids, e.g. 'whisper-1'.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto = cuda when Ray assigned a GPU and CUDA is usable, else cpu."
    )
    compute_type: str | None = Field(
        None, description="CTranslate2 compute type; default float16 on cuda, int8 on cpu."
    )
    num_gpus: float = Field(0.0, ge=0.0, le=8.0, description="GPU share per replica.")
    num_cpus: float = Field(1.0, gt=0.0, le=64.0, description="CPU share per replica.")
    cpu_threads: int = Field(
        0,
        ge=0,
        le=64,
        description="CTranslate2 intra-op threads per concurrent batch; 0 = ceil(num_cpus).",
    )
    concurrent_batches: int = Field(
        1,
        ge=1,
        le=8,
        description="Batches one replica decodes at once (CTranslate2 workers, each with "
        "cpu_threads threads). On a small CPU node 2 batches of 1 thread each beat 1 batch of "
        "2 threads: a decoder step of a small model splits poorly across threads, so the "
        "second thread mostly waits (see benchmarks/README.md). 1 on a GPU.",
    )
    nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Niceness added to the replica's threads: where it shares cores with "
        "the proxy and Ingress, they answer first and the model takes the rest (no effect "
        "on a GPU's work). 0 leaves it as Ray set it.",
    )
    max_ongoing_requests: int = Field(
        32, ge=1, le=1024, description="Chunks a replica accepts at once (>= max_batch_size)."
    )
    max_queued_requests: int = Field(
        -1, ge=-1, description="Chunks waiting at the router before 503; -1 = unbounded."
    )
    autoscaling: AutoscalingSettings = Field(default_factory=AutoscalingSettings)
    batching: BatchSettings = Field(default_factory=BatchSettings)
    packing: PackingSettings = Field(default_factory=PackingSettings)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not MODEL_NAME_RE.match(value):
            raise ValueError(f"model name {value!r} must match {MODEL_NAME_RE.pattern}")
        return value

    @model_validator(mode="after")
    def _checks(self) -> ModelConfig:
        if self.num_gpus > 1 and not float(self.num_gpus).is_integer():
            raise ValueError("num_gpus above 1 must be a whole number")
        if self.max_ongoing_requests < self.batching.max_batch_size:
            raise ValueError(
                f"model {self.name}: max_ongoing_requests ({self.max_ongoing_requests}) must be "
                f">= batching.max_batch_size ({self.batching.max_batch_size}), "
                "or batches can never fill"
            )
        return self

    @property
    def weights_uri(self) -> str:
        return self.weights or f"bundled:{self.name}"

    @property
    def deployment_name(self) -> str:
        return "Transcriber-" + re.sub(r"[^A-Za-z0-9_-]", "_", self.name)

    @property
    def effective_cpu_threads(self) -> int:
        if self.cpu_threads:
            return self.cpu_threads
        return max(1, int(-(-self.num_cpus // 1)))
