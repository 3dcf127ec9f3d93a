"""Prometheus metrics: what the service records, defined in one place for every process.

Every metric goes through Ray's metrics export (`ray.serve.metrics` in Serve replicas,
`ray.util.metrics` in the job tracker), so replicas on every node report to their node's
metrics agent and Ray's Prometheus service discovery finds them; nothing keeps a private
registry that would only see one replica. Ray prefixes the names with `ray_`.

- Ingress (`RequestMetrics`, recorded by `serve_app.http.metrics`): `whisper_http_requests_total`
  and `whisper_http_request_seconds` by route template, method, model and status.
- Transcriber (`ReplicaMetrics`): batch size, batch seconds, queue wait, RTF, audio seconds,
  queue depth, clips per window and the autoscaling ceiling (`whisper_max_replicas`), per model.
- JobTracker (`JobMetrics`): `whisper_jobs_finished_total` by model and outcome,
  `whisper_webhook_deliveries_total` by outcome (one per attempt), and per tenant
  `whisper_jobs_tenant_queued`, `whisper_jobs_tenant_running`,
  `whisper_jobs_tenant_oldest_queued_seconds` (at most `jobs.metrics_max_tenants` tenant
  labels plus `_other`).
- JobTracker (sweeps) and Ingress (`DELETE /v1/jobs/{id}`), `DeletionMetrics`:
  `whisper_retention_deletions_total` by kind (audio, result, job) and reason (expired, purge).
- Ingress, realtime sessions (`LiveMetrics`, the `LiveObserver` of `serve_app.http.realtime`):
  `whisper_live_sessions` (open now), `whisper_live_completed_seconds` (end of speech, i.e.
  the committed turn, to its `completed` event) and `whisper_live_utterances_total` by outcome.
"""

from __future__ import annotations

from typing import Any, Protocol

from ray.serve import metrics as serve_metrics
from ray.util import metrics as ray_metrics

from serve_app.inference.batcher import BatchRecord


def _keys(*names: str) -> Any:
    # Ray annotates tag_keys as a 1-tuple; any tuple of names is what it accepts.
    return names


_LATENCY_BOUNDARIES = [0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 300]


class RequestMetrics:
    """Ingress-side request counters (Serve adds application/deployment/replica tags)."""

    def __init__(self) -> None:
        self.requests = serve_metrics.Counter(
            "whisper_http_requests_total",
            description="HTTP requests by route template, method, model and status code.",
            tag_keys=_keys("route", "method", "model", "status"),
        )
        self.seconds = serve_metrics.Histogram(
            "whisper_http_request_seconds",
            description="Time from request start to the end of the response.",
            boundaries=_LATENCY_BOUNDARIES,
            tag_keys=_keys("route", "method", "model"),
        )

    def observe(self, route: str, method: str, model: str, status: int, seconds: float) -> None:
        tags = {"route": route, "method": method, "model": model}
        self.requests.inc(1, tags={**tags, "status": str(status)})
        self.seconds.observe(seconds, tags=tags)


class JobMetrics:
    """Job outcomes and webhook deliveries, recorded by the JobTracker actor."""

    def __init__(self) -> None:
        self.finished = ray_metrics.Counter(
            "whisper_jobs_finished_total",
            description="Jobs that reached a terminal state, by model and outcome.",
            tag_keys=("model", "status"),
        )
        self.webhooks = ray_metrics.Counter(
            "whisper_webhook_deliveries_total",
            description="Webhook delivery attempts by outcome (ok or failed).",
            tag_keys=("outcome",),
        )
        # Label values are bounded by jobs.metrics_max_tenants (the rest: tenant="_other").
        self.tenant_queued = ray_metrics.Gauge(
            "whisper_jobs_tenant_queued",
            description="Queued jobs per tenant.",
            tag_keys=("tenant",),
        )
        self.tenant_running = ray_metrics.Gauge(
            "whisper_jobs_tenant_running",
            description="Running jobs per tenant.",
            tag_keys=("tenant",),
        )
        self.tenant_oldest = ray_metrics.Gauge(
            "whisper_jobs_tenant_oldest_queued_seconds",
            description="Age of the tenant's oldest queued job (0 when none is queued).",
            tag_keys=("tenant",),
        )

    def job_finished(self, model: str, status: str) -> None:
        self.finished.inc(1, tags={"model": model, "status": status})

    def webhook_attempt(self, ok: bool) -> None:
        self.webhooks.inc(1, tags={"outcome": "ok" if ok else "failed"})

    def tenant_depth(
        self, tenant: str, queued: int, running: int, oldest_queued_age_s: float
    ) -> None:
        self.tenant_queued.set(queued, tags={"tenant": tenant})
        self.tenant_running.set(running, tags={"tenant": tenant})
        self.tenant_oldest.set(oldest_queued_age_s, tags={"tenant": tenant})


class DeletionMetrics:
    """Deleted audio objects, results and job rows (the `DeletionObserver` of jobs.retention)."""

    def __init__(self) -> None:
        self.deletions = ray_metrics.Counter(
            "whisper_retention_deletions_total",
            description="Audio objects, results and job rows deleted, by kind and reason "
            "(expired: the retention sweeper; purge: DELETE /v1/jobs/{id}).",
            tag_keys=("kind", "reason"),
        )

    def deleted(self, kind: str, reason: str, count: int) -> None:
        self.deletions.inc(count, tags={"kind": kind, "reason": reason})


_BATCH_BOUNDARIES: list[float] = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]


class ReplicaMetrics:
    """One Transcriber replica's batching metrics (the `BatchObserver` it is given)."""

    def __init__(self, model: str, max_replicas: int | None = None) -> None:
        def histogram(name: str, description: str, boundaries: list[float]) -> Any:
            metric = serve_metrics.Histogram(
                name, description=description, boundaries=boundaries, tag_keys=("model",)
            )
            # Serve adds its own tags to the dict it is given, so each metric gets a copy.
            metric.set_default_tags({"model": model})
            return metric

        self.batch = histogram(
            "whisper_batch_size", "Chunks decoded per batched generate call.", _BATCH_BOUNDARIES
        )
        self.batch_seconds = histogram(
            "whisper_batch_seconds",
            "Wall time of one batched decode.",
            [0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64],
        )
        self.queue_wait = histogram(
            "whisper_chunk_queue_wait_seconds",
            "Time the oldest chunk of a batch waited in the queue.",
            [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32],
        )
        self.rtf = histogram(
            "whisper_batch_rtf",
            "Real-time factor of a batch (compute seconds / audio seconds).",
            [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2],
        )
        self.clips = histogram(
            "whisper_clips_per_window",
            "Chunks that shared one 30 s window (window packing).",
            [1.0, 2, 3, 4, 5, 6, 8, 10, 12],
        )
        self.audio = serve_metrics.Counter(
            "whisper_audio_seconds_total",
            description="Seconds of speech decoded.",
            tag_keys=("model",),
        )
        self.audio.set_default_tags({"model": model})
        self.queue = serve_metrics.Gauge(
            "whisper_queue_depth", description="Chunks waiting for a batch.", tag_keys=("model",)
        )
        self.queue.set_default_tags({"model": model})
        # The config's ceiling, so that "replicas at max" can compare Serve's own
        # ray_serve_autoscaling_target_replicas with it (Serve exports no max).
        self.max_replicas = serve_metrics.Gauge(
            "whisper_max_replicas",
            description="The most replicas autoscaling may start for this model (config).",
            tag_keys=("model",),
        )
        self.max_replicas.set_default_tags({"model": model})
        self._max_replicas = max_replicas

    def batch_done(self, record: BatchRecord, audio_s: float, clips_per_window: list[int]) -> None:
        self.batch.observe(record.size)
        self.batch_seconds.observe(record.run_s)
        self.queue_wait.observe(record.queue_wait_s)
        self.audio.inc(audio_s)
        if audio_s > 0:
            self.rtf.observe(record.run_s / audio_s)
        for clips in clips_per_window:
            self.clips.observe(clips)

    def queue_depth(self, depth: int) -> None:
        self.queue.set(depth)
        if self._max_replicas is not None:
            # Set with every queue report: a gauge set once in __init__ never reached
            # the metrics agent (seen in tests/integration/test_prometheus.py).
            self.max_replicas.set(self._max_replicas)


class PhaseObserver(Protocol):
    def request_phases(self, model: str, phases: dict[str, float]) -> None: ...


class PhaseMetrics:
    """Each request's time budget: `whisper_request_phase_seconds` by model and phase."""

    def __init__(self) -> None:
        self.phases = ray_metrics.Histogram(
            "whisper_request_phase_seconds",
            description="Seconds one request spent in each phase (read, decode, vad, language, "
            "queue, batch, assemble, render, total).",
            boundaries=[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64],
            tag_keys=_keys("model", "phase"),
        )

    def request_phases(self, model: str, phases: dict[str, float]) -> None:
        for phase, seconds in phases.items():
            self.phases.observe(seconds, tags={"model": model, "phase": phase})


class LiveObserver(Protocol):
    """What the realtime route reports (the ingress passes `LiveMetrics`; tests a recorder)."""

    def sessions_open(self, count: int) -> None: ...

    def utterance_done(self, model: str, outcome: str, seconds: float) -> None: ...


class LiveMetrics:
    """Realtime sessions of one ingress replica: open sessions and end-of-speech latency."""

    def __init__(self) -> None:
        self.sessions = serve_metrics.Gauge(
            "whisper_live_sessions", description="Open realtime (/v1/realtime) sessions."
        )
        self.latency = serve_metrics.Histogram(
            "whisper_live_completed_seconds",
            description="From the end of speech (the committed turn) to its completed event.",
            boundaries=[0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8, 16, 32],
            tag_keys=_keys("model"),
        )
        self.utterances = serve_metrics.Counter(
            "whisper_live_utterances_total",
            description="Committed turns of realtime sessions by outcome (completed, failed, "
            "cancelled: the client left first).",
            tag_keys=_keys("model", "outcome"),
        )

    def sessions_open(self, count: int) -> None:
        self.sessions.set(count)

    def utterance_done(self, model: str, outcome: str, seconds: float) -> None:
        self.utterances.inc(1, tags={"model": model, "outcome": outcome})
        if outcome == "completed":
            self.latency.observe(seconds, tags={"model": model})


class UsageMetrics:
    """`whisper_usage_audio_seconds_total` by tenant (bounded by usage.metric_tenants), model
    and source (sync, live, handle in the ingress; job in the tracker)."""

    def __init__(self) -> None:
        self.seconds = ray_metrics.Counter(
            "whisper_usage_audio_seconds_total",
            description="Seconds of audio transcribed, by tenant (the first usage.metric_tenants "
            "tenants; the rest as other), model and source.",
            tag_keys=_keys("tenant", "model", "source"),
        )

    def audio_seconds(self, tenant: str, model: str, source: str, seconds: float) -> None:
        self.seconds.inc(seconds, tags={"tenant": tenant, "model": model, "source": source})
