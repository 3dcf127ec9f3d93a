"""Ingress: the HTTP app and the DeploymentHandle entry point of the service."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import ray
from fastapi import FastAPI
from ray import serve

from serve_app.api import build_http_app
from serve_app.config import AppConfig
from serve_app.jobs.frontend import JobsFrontend
from serve_app.jobs.tracker import get_or_create_tracker
from serve_app.results import TranscribeRequest, TranscriptionResult
from serve_app.service import TranscriptionService

logger = logging.getLogger("ray.serve")


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
@serve.ingress()
class Ingress:
    """Decodes audio, cuts VAD chunks and fans them out to the per-model Transcribers.

    Other Ray apps call `transcribe` through `serve.get_app_handle(app_name)`; it runs the
    same path (and the same cross-request batches) as the HTTP routes.
    """

    def __init__(self, config: AppConfig, transcribers: dict[str, Any]) -> None:
        self.service = TranscriptionService(config, transcribers)
        self.jobs: JobsFrontend | None = None
        if config.jobs.enabled:
            self.jobs = JobsFrontend(
                config, self.service, lambda: get_or_create_tracker(config, transcribers)
            )

    async def check_health(self) -> None:
        """Serve calls this every few seconds; it also brings back a tracker killed for good."""
        if self.jobs is not None:
            await self.jobs.check_tracker()

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_http_app(self.service, self.jobs)

    async def transcribe(
        self, audio: bytes | np.ndarray, request: TranscribeRequest | None = None, **options: Any
    ) -> TranscriptionResult:
        """Transcribe encoded audio bytes or a 16 kHz mono float32 array.

        Options are `TranscribeRequest` fields (model, task, language, prompt, temperature,
        beam_size, word_timestamps, segment_timestamps, priority, tenant), given either as a
        `TranscribeRequest` or as keyword arguments.
        """
        if request is None:
            request = TranscribeRequest(**options)
        return await self.service.transcribe(audio, request)

    async def describe(self) -> dict[str, Any]:
        """Where this replica runs: node id and the Ray resources it was given."""
        context = ray.get_runtime_context()
        return {
            "node_id": context.get_node_id(),
            "assigned_resources": context.get_assigned_resources(),
        }

    async def stats(self) -> dict[str, Any]:
        """Per-model batching statistics from every Transcriber replica reached."""
        out: dict[str, Any] = {}
        for name, handle in self.service._handles.items():
            out[name] = await handle.stats.remote()
        return out
