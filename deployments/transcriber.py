"""Transcriber: one Ray Serve deployment per model size (wiring around `ModelReplica`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import ctranslate2
import numpy as np
import ray
from ray import serve

from serve_app.config import BatchSettings, ModelConfig, S3Config
from serve_app.inference.protocol import ChunkRequest, ChunkResult, ReplicaInfo, ReplicaStats
from serve_app.inference.replica import ModelReplica
from serve_app.inference.weights import resolve_weights, select_device
from serve_app.observability import ReplicaMetrics
from serve_app.pipeline.priority import lower_cpu_priority
from serve_app.results import LanguageGuess

logger = logging.getLogger("ray.serve")


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=32)
class Transcriber:
    """Holds one faster-whisper model; decodes same-option chunks from all callers together."""

    def __init__(self, model: ModelConfig, cache_dir: str, s3: S3Config | None = None) -> None:
        lower_cpu_priority(model.nice)  # before the model: CTranslate2's threads inherit it
        context = ray.get_runtime_context()
        self.gpu_ids = [str(g) for g in context.get_accelerator_ids().get("GPU", [])]
        device = select_device(
            model.device, model.compute_type, self.gpu_ids, ctranslate2.get_cuda_device_count()
        )
        self.replica = ModelReplica(
            model,
            resolve_weights(model.weights_uri, Path(cache_dir), s3),
            device,
            replica_id=serve.get_replica_context().replica_id.unique_id,
            observer=ReplicaMetrics(model.name, model.autoscaling.max_replicas),
        )
        logger.info(
            "Transcriber %s ready on %s/%s (%s), %d concurrent batch(es) x cpu_threads=%d, pid=%d",
            model.name,
            device.device,
            device.compute_type,
            device.reason,
            model.concurrent_batches,
            model.effective_cpu_threads,
            os.getpid(),
        )

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live batch tuning: `serve deploy` with a new `user_config` lands here."""
        self.replica.reconfigure(BatchSettings.model_validate(user_config or {}))

    async def transcribe_chunk(self, request: ChunkRequest) -> ChunkResult:
        return await self.replica.transcribe_chunk(request)

    async def detect_language(self, chunks: Sequence[np.ndarray]) -> LanguageGuess:
        return await self.replica.detect_language(chunks)

    async def describe(self) -> ReplicaInfo:
        context = ray.get_runtime_context()
        return replace(
            self.replica.describe(),
            gpu_ids=tuple(self.gpu_ids),
            node_id=context.get_node_id(),
            assigned_resources=dict(context.get_assigned_resources()),
        )

    async def stats(self) -> ReplicaStats:
        return self.replica.stats()
