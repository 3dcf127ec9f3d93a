"""Typed application config: the single source of every setting.

`serve_config.yaml` passes `args:` to `serve_app.app:build_app`, which Ray Serve validates
into `AppConfig`. Nothing else in the code reads the environment.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
        0.1,
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
        0, ge=0, le=64, description="CTranslate2 intra-op threads; 0 = ceil(num_cpus)."
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


class S3Config(_Strict):
    """Connection settings for any S3-compatible endpoint."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None


class StorageConfig(_Strict):
    """Where durable state lives. Defaults need no external server."""

    database_url: str = Field("sqlite:///~/.local/share/whisper-serve/jobs.db")
    blob_url: str = Field("file:///~/.local/share/whisper-serve/blobs")
    redis_url: str | None = None
    s3: S3Config = Field(default_factory=S3Config)


class LimitsConfig(_Strict):
    """Bounds on untrusted input."""

    max_upload_bytes: int = Field(100 * 1024 * 1024, ge=1024, description="Request body cap.")
    max_audio_duration_s: float = Field(4 * 3600.0, gt=0, description="Decoded length cap.")
    decode_timeout_s: float = Field(120.0, gt=0, description="Wall-clock cap on one decode.")
    request_timeout_s: float = Field(600.0, gt=0, description="Cap on one sync transcription.")
    decode_workers: int = Field(
        2, ge=1, le=64, description="Child processes per replica that decode untrusted audio."
    )
    decode_max_memory_mb: int = Field(
        3072,
        ge=64,
        description="Address space a decode child may add beyond its start-up size (RLIMIT_AS); "
        "a 4 h file needs about 2 GiB.",
    )


class JobsConfig(_Strict):
    """The durable job system (JobTracker actor)."""

    enabled: bool = Field(True, description="Serve /v1/jobs and run the JobTracker actor.")
    tracker_name: str = Field("whisper-job-tracker", description="Named detached actor.")
    namespace: str = Field("whisper-serve", description="Ray namespace of the tracker.")
    tracker_num_cpus: float = Field(0.1, gt=0)
    tracker_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources of the tracker, e.g. {'head': 0.01}.",
    )
    max_concurrent_jobs: int = Field(4, ge=1, le=256, description="Jobs processed at once.")
    lease_seconds: float = Field(15.0, ge=2, description="A silent tracker loses jobs after.")
    max_attempts: int = Field(3, ge=1, le=20, description="Tries before a job fails.")
    retry_base_s: float = Field(2.0, gt=0, description="First retry delay; doubles per try.")
    retry_max_s: float = Field(60.0, gt=0, description="Cap on the retry delay.")
    poll_interval_s: float = Field(1.0, gt=0, description="Queue poll when nothing wakes it.")
    default_priority: int = Field(0, ge=0, le=9, description="Jobs rank below interactive (10).")
    webhook_secret: str | None = Field(None, description="HMAC key for webhook signatures.")
    webhook_attempts: int = Field(5, ge=1, le=20)
    webhook_timeout_s: float = Field(10.0, gt=0)
    allow_private_urls: bool = Field(
        False, description="Let URL inputs and webhooks reach loopback/private addresses."
    )
    url_allowlist: list[str] = Field(
        default_factory=list,
        description="'host:port' pairs (as written in the URL) that URL inputs may fetch even "
        "though they resolve to private addresses, e.g. an internal media server. Redirect "
        "targets are checked on their own; webhooks are not affected.",
    )
    url_fetch_timeout_s: float = Field(60.0, gt=0, description="Wall-clock cap on one URL fetch.")
    presign_expires_s: int = Field(900, ge=60, le=7 * 24 * 3600)


class AuthConfig(_Strict):
    """API keys: `Authorization: Bearer <key>` maps each request to a tenant."""

    enabled: bool = Field(
        False,
        description="Require a valid key on every route but /healthz, /readyz and the docs; "
        "off = every request belongs to `default_tenant`.",
    )
    default_tenant: str = Field(
        "default", min_length=1, max_length=64, description="Tenant of requests when auth is off."
    )
    key_cache_s: float = Field(
        5.0,
        ge=0,
        le=300,
        description="How long a replica trusts a verified key before looking it up again; "
        "a revoked key stops working within this time.",
    )


class RateLimitSettings(_Strict):
    """The budget of one API key (or of everyone, when auth is off)."""

    requests_per_s: float = Field(
        10.0, gt=0, le=100_000, description="Token refill rate: sustained requests per second."
    )
    burst: int = Field(
        20, ge=1, le=1_000_000, description="Bucket capacity: requests let through at once."
    )
    max_concurrent: int = Field(
        8, ge=1, le=10_000, description="Sync transcriptions and job submissions in flight at once."
    )
    max_active_jobs: int = Field(
        1000, ge=1, description="Queued plus running jobs of the key's tenant at once."
    )


class RateLimitConfig(_Strict):
    """Per-key token bucket and concurrency quota; shared through Redis when configured."""

    enabled: bool = Field(False, description="Enforce the limits below (429 + Retry-After).")
    default: RateLimitSettings = Field(default_factory=RateLimitSettings)
    per_key: dict[str, RateLimitSettings] = Field(
        default_factory=dict,
        description="Overrides by key id, key name or tenant (first match, in that order).",
    )
    redis_prefix: str = Field("whisper:rl", min_length=1, description="Prefix of Redis keys.")
    slot_ttl_s: float = Field(
        900.0,
        gt=0,
        description="A concurrency slot whose holder died frees itself after this long; keep it "
        "above limits.request_timeout_s.",
    )

    def limits_for(self, key_id: str, key_name: str, tenant: str) -> RateLimitSettings:
        for ident in (key_id, key_name, tenant):
            if ident in self.per_key:
                return self.per_key[ident]
        return self.default


class IngressConfig(_Strict):
    """Resources of the HTTP/handle entry deployment."""

    num_cpus: float = Field(0.25, gt=0)
    num_replicas: int = Field(1, ge=1)
    max_ongoing_requests: int = Field(64, ge=1)
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources per replica, e.g. {'head': 0.01} to keep the ingress "
        "on nodes started with that resource (the CPU head of cluster.yaml).",
    )


class ServerVadSettings(_Strict):
    """Server VAD defaults of a realtime session (a `session.update` may change them)."""

    threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="Silero speech probability that starts a turn."
    )
    prefix_padding_ms: int = Field(
        300, ge=0, le=5000, description="Audio kept before the detected start of speech."
    )
    silence_duration_ms: int = Field(
        500, ge=50, le=10_000, description="Silence that ends a turn (and commits it)."
    )


class RealtimeConfig(_Strict):
    """Realtime transcription sessions: the `/v1/realtime` WebSocket."""

    enabled: bool = Field(True, description="Serve the /v1/realtime WebSocket.")
    max_sessions_per_key: int = Field(
        16,
        ge=1,
        le=10_000,
        description="Open sessions per API key (per ingress replica); one more is refused "
        "with an error event and close code 1008.",
    )
    max_message_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest client message; a larger one gets an error event and is dropped "
        "(the server itself closes the socket above 16 MiB).",
    )
    max_buffered_s: float = Field(
        120.0,
        gt=0,
        le=3600,
        description="Audio a session may hold uncommitted; an append beyond it gets an error "
        "event (manual commits) or the turn is committed (server VAD).",
    )
    max_utterance_s: float = Field(
        30.0,
        gt=1,
        le=600,
        description="With server VAD, speech that goes on this long is committed as one turn "
        "and the next turn starts at once.",
    )
    max_session_s: float = Field(
        3600.0, gt=0, description="A session is closed (error event first) after this long."
    )
    idle_timeout_s: float = Field(
        60.0,
        gt=0,
        description="A session without a client message for this long is closed (error "
        "event first).",
    )
    vad: ServerVadSettings = Field(
        default_factory=ServerVadSettings, description="Server VAD defaults of new sessions."
    )


class AppConfig(_Strict):
    """Root of the app-builder args (`serve_config.yaml` → `args:`)."""

    models: list[ModelConfig] = Field(
        default_factory=lambda: [ModelConfig(name="tiny.en", aliases=["whisper-1"])],
        min_length=1,
    )
    default_model: str | None = Field(None, description="Used when a request names no model.")
    model_cache_dir: str = Field(
        "~/.cache/whisper-serve/models", description="Where reassembled/downloaded weights go."
    )
    ingress: IngressConfig = Field(default_factory=IngressConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    realtime: RealtimeConfig = Field(default_factory=RealtimeConfig)

    @model_validator(mode="after")
    def _unique_names(self) -> AppConfig:
        seen: dict[str, str] = {}
        for model in self.models:
            for ident in [model.name, *model.aliases]:
                if ident in seen:
                    raise ValueError(f"model id {ident!r} is used twice ({seen[ident]})")
                seen[ident] = model.name
        if self.default_model is not None and self.default_model not in seen:
            raise ValueError(f"default_model {self.default_model!r} is not a configured model")
        return self

    def model_ids(self) -> dict[str, str]:
        """Every accepted id (names and aliases) -> canonical model name."""
        ids: dict[str, str] = {}
        for model in self.models:
            ids[model.name] = model.name
            for alias in model.aliases:
                ids[alias] = model.name
        return ids

    def resolve_model(self, requested: str | None) -> ModelConfig | None:
        ident = requested or self.default_model or self.models[0].name
        name = self.model_ids().get(ident)
        return next((m for m in self.models if m.name == name), None)

    @property
    def cache_path(self) -> Path:
        return Path(self.model_cache_dir).expanduser()
