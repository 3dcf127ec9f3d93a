"""Ingress: the HTTP app and the DeploymentHandle entry point of the service (wiring only)."""

from __future__ import annotations

from typing import Any

import numpy as np
import ray
from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.config import AppConfig
from serve_app.http.app import build_http_app
from serve_app.inference.protocol import Placement, ReplicaStats
from serve_app.jobs.actor import RayTrackerClient, get_or_create_tracker
from serve_app.jobs.frontend import JobsFrontend
from serve_app.observability import DeletionMetrics, LiveMetrics, PhaseMetrics, UsageMetrics
from serve_app.options import INTERACTIVE_PRIORITY, Caller, TranscribeOptions
from serve_app.pipeline.clients import RaySpeakerClient, ray_clients
from serve_app.pipeline.heap import freeze_startup_heap
from serve_app.pipeline.priority import lower_cpu_priority
from serve_app.pipeline.service import TranscriptionService
from serve_app.results import TranscriptionResult
from serve_app.security.usage import UsageMeter


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
@serve.ingress()
class Ingress:
    """Decodes audio, cuts VAD chunks and fans them out to the per-model Transcribers.

    Other Ray apps call `transcribe` through `serve.get_app_handle(app_name)`; it runs the
    same path (and the same cross-request batches) as the HTTP routes.
    """

    def __init__(
        self,
        config: AppConfig,
        transcribers: dict[str, DeploymentHandle],
        speakers: DeploymentHandle | None = None,
    ) -> None:
        lower_cpu_priority(config.ingress.nice)
        wait_s = config.ingress.replica_wait_s
        speaker_client = RaySpeakerClient(speakers, wait_s) if speakers is not None else None
        models = ray_clients(transcribers, wait_s)
        self.service = TranscriptionService(config, models, speaker_client)
        self.jobs: JobsFrontend | None = None
        if config.jobs.enabled:
            tracker = RayTrackerClient(
                lambda: get_or_create_tracker(config, transcribers, speakers)
            )
            self.jobs = JobsFrontend(config, self.service, tracker, DeletionMetrics())
        self.usage = UsageMetrics()
        store = self.jobs.store if self.jobs is not None else None
        self.meter = UsageMeter(store, config.usage, self.usage)
        freeze_startup_heap()  # last: everything built above lives as long as the replica

    async def check_health(self) -> None:
        """Serve calls this every few seconds; it also brings back a tracker killed for good."""
        if self.jobs is not None:
            await self.jobs.tracker.check()

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_http_app(self.service, self.jobs, PhaseMetrics(), LiveMetrics(), self.usage)

    async def transcribe(
        self,
        audio: bytes | np.ndarray,
        options: TranscribeOptions | None = None,
        *,
        tenant: str = "default",
        priority: int = INTERACTIVE_PRIORITY,
        **fields: Any,
    ) -> TranscriptionResult:
        """Transcribe encoded audio bytes or a 16 kHz mono float32 array.

        Options are a `TranscribeOptions`, or its fields as keyword arguments (model, task,
        language, prompt, hotwords, temperature, beam_size, … see the README's field
        table); a bad value raises `BadRequest` naming the field. `tenant` and `priority`
        place the chunks in the shared batcher.
        """
        if options is None or fields:
            base = options.model_dump(exclude_unset=True) if options is not None else {}
            options = TranscribeOptions.parse({**base, **fields})
        result = await self.service.transcribe(audio, options, Caller(tenant, priority))
        await self.meter.record(tenant, "handle", result.model, "handle", result.duration)
        return result

    async def describe(self) -> Placement:
        """Where this ingress replica runs: node id and the Ray resources it was given."""
        context = ray.get_runtime_context()
        return Placement(context.get_node_id(), dict(context.get_assigned_resources()))

    async def stats(self) -> dict[str, ReplicaStats]:
        """Per-model batching statistics from the Transcriber replica each call reaches."""
        return {name: await client.stats() for name, client in self.service.models.items()}
