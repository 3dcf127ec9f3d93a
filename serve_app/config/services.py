"""Config of everything around the models: storage, limits, jobs, access, ingress, realtime."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from serve_app.config.base import _Strict


class S3Config(_Strict):
    """Connection settings for any S3-compatible endpoint."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None


class ResilienceConfig(_Strict):
    """How store calls fail fast while Postgres, SQLite or S3 is down (issue 16).

    Every store has its own small thread pool (never the one decode and VAD use) and a
    circuit breaker: after `breaker_failures` consecutive failures it refuses calls at once
    (503 `backend_unavailable` + `Retry-After`) and lets one probe through every
    `breaker_open_s`. Field names match `serve_app.stores.StoreTuning`.
    """

    open_timeout_s: float = Field(30.0, gt=0, description="Wait for the store at start-up.")
    connect_timeout_s: float = Field(2.0, gt=0, description="Postgres/S3 connect timeout.")
    statement_timeout_s: float = Field(10.0, gt=0, description="Postgres statement_timeout.")
    pool_timeout_s: float = Field(
        1.0, gt=0, description="Wait for a pooled Postgres connection before giving up."
    )
    pool_max_size: int = Field(4, ge=1, le=100, description="Postgres connections per process.")
    executor_workers: int = Field(8, ge=1, le=64, description="Threads per store for its calls.")
    max_pending: int = Field(
        64, ge=1, description="Store calls queued or running before more are refused."
    )
    breaker_failures: int = Field(2, ge=1, description="Consecutive failures that open it.")
    breaker_open_s: float = Field(
        1.0, gt=0, description="Fail fast this long, then probe (also the Retry-After)."
    )


class StorageConfig(_Strict):
    """Where durable state lives. Defaults need no external server."""

    database_url: str = Field("sqlite:///~/.local/share/whisper-serve/jobs.db")
    blob_url: str = Field("file:///~/.local/share/whisper-serve/blobs")
    redis_url: str | None = None
    s3: S3Config = Field(default_factory=S3Config)
    resilience: ResilienceConfig = Field(default_factory=ResilienceConfig)


class LimitsConfig(_Strict):
    """Bounds on untrusted input."""

    max_upload_bytes: int = Field(100 * 1024 * 1024, ge=1024, description="Request body cap.")
    body_idle_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A request body that sends no bytes this long gets 408 and frees its slot.",
    )
    max_concurrent_uploads: int = Field(
        32,
        ge=1,
        description="Request bodies streaming in at once per API key (per client address "
        "without auth), per ingress replica; one more gets 429 before its body is read. A "
        "slot is freed when its body is complete, so this caps slow uploads, not requests.",
    )
    max_audio_duration_s: float = Field(4 * 3600.0, gt=0, description="Decoded length cap.")
    decode_timeout_s: float = Field(120.0, gt=0, description="Wall-clock cap on one decode.")
    request_timeout_s: float = Field(600.0, gt=0, description="Cap on one sync transcription.")
    max_channels: int = Field(
        8, ge=1, le=64, description="multichannel=true: most channels (400 above)."
    )
    decode_workers: int = Field(
        2, ge=1, le=64, description="Child processes per replica that decode untrusted audio."
    )
    vad_workers: int = Field(
        2,
        ge=1,
        le=64,
        description="VAD runs at once per replica (each one thread); more wait, holding only "
        "their decoded audio.",
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
    tracker_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Niceness added to the tracker (and its decode children): a job's "
        "decode and VAD yield to the proxy and Ingress, as the Transcribers do.",
    )
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
    max_vocabularies_per_tenant: int = Field(
        100, ge=1, le=100_000, description="Vocabularies (POST /v1/vocabularies) a tenant keeps."
    )
    webhook_secret: str | None = Field(None, description="HMAC key for webhook signatures.")
    webhook_secret_file: str | None = Field(
        None,
        description="A file holding the HMAC key instead (e.g. a mounted Kubernetes Secret); "
        "read when the tracker signs, so a rotated Secret takes effect without a redeploy.",
    )
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
    fair_share: bool = Field(
        True,
        description="Lease jobs by weighted deficit round-robin across tenants within each "
        "priority, a tenant's running jobs capped by its share while others wait; off = "
        "priority, then FIFO across all tenants.",
    )
    metrics_max_tenants: int = Field(
        20,
        ge=0,
        le=1000,
        description="Tenants with their own label on the per-tenant queue gauges (those with "
        "the most queued + running jobs); the rest are summed under tenant='_other'.",
    )
    presign_expires_s: int = Field(900, ge=60, le=7 * 24 * 3600)

    @model_validator(mode="after")
    def _one_secret(self) -> JobsConfig:
        if self.webhook_secret is not None and self.webhook_secret_file is not None:
            raise ValueError("set webhook_secret or webhook_secret_file, not both")
        return self

    def signing_secret(self) -> str | None:
        """The webhook HMAC key: inline, or read from `webhook_secret_file` now."""
        if self.webhook_secret_file is None:
            return self.webhook_secret
        return Path(self.webhook_secret_file).expanduser().read_text(encoding="utf-8").strip()


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
    key_stale_s: float = Field(
        3600.0,
        ge=0,
        description="While the job store is down, a key verified within this time is still "
        "served from the cache (a key revoked meanwhile works until the store is back).",
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
    weight: float = Field(
        1.0,
        gt=0,
        le=1000,
        description="Fair-share weight of the key's jobs: while several tenants wait, each "
        "gets job slots in proportion to its weight (a tenant's weight is the largest among "
        "its queued and running jobs). Applies with or without `rate_limit.enabled`.",
    )
    audio_minutes_per_day: float | None = Field(
        None,
        gt=0,
        description="Audio minutes the key may send per UTC day (sync, jobs, live); a request "
        "that would exceed it gets 429 with Retry-After (the next UTC midnight). Unset: none.",
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
    nice: int = Field(
        0,
        ge=0,
        le=19,
        description="Niceness added to Ingress replicas (and their decode children). 0 (the "
        "default) keeps them ahead of the Transcribers (`models[].nice`) and the tracker: "
        "answering a submit or a probe takes little CPU, and must not wait for a batch.",
    )
    replica_wait_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="How long a sync, streamed or live call waits for a model (or speaker) "
        "replica to take a chunk while none does, e.g. the only replica restarting, before "
        "503 backend_unavailable with Retry-After. Bounds the assignment only, never the "
        "decode, and not while the deployment is busy but answering. Jobs wait without bound.",
    )
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


class UsageConfig(_Strict):
    """Usage metering: audio seconds per tenant, key, UTC day, model and source."""

    enabled: bool = Field(
        True, description="Record usage in the job store (needs jobs or auth for the store)."
    )
    metric_tenants: int = Field(
        20,
        ge=0,
        le=10_000,
        description="Tenants with their own label on whisper_usage_audio_seconds_total; the "
        'rest share tenant="other" (bounds the label cardinality).',
    )
