"""Transcriber: one Ray Serve deployment per model size, batching chunks across requests."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ctranslate2
import numpy as np
import ray
from ray import serve
from ray.serve import metrics

from serve_app.batching import BatchRecord, KeyedBatcher
from serve_app.config import BatchSettings, ModelConfig, S3Config
from serve_app.engine import WhisperEngine
from serve_app.errors import InferenceFailed, ServiceError
from serve_app.models import resolve_weights, select_device
from serve_app.packing import Window, plan_windows, slot_cost
from serve_app.results import ChunkRequest, ChunkResult, DecodeOptions, LanguageGuess

logger = logging.getLogger("ray.serve")

_BATCH_BOUNDARIES = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=32)
class Transcriber:
    """Holds one faster-whisper model; decodes same-option chunks from all callers together."""

    def __init__(self, model: ModelConfig, cache_dir: str, s3: S3Config | None = None) -> None:
        from pathlib import Path

        self.config = model
        gpu_ids = [str(g) for g in ray.get_runtime_context().get_accelerator_ids().get("GPU", [])]
        self.device = select_device(
            model.device, model.compute_type, gpu_ids, ctranslate2.get_cuda_device_count()
        )
        weights = resolve_weights(model.weights_uri, Path(cache_dir), s3)
        self.engine = WhisperEngine(
            weights,
            device=self.device.device,
            compute_type=self.device.compute_type,
            cpu_threads=model.effective_cpu_threads,
        )
        self.gpu_ids = gpu_ids
        # One thread: the model is a single compute resource; concurrency comes from batching.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")
        packing = model.packing
        self.packing_enabled = packing.mode == "on" or (
            packing.mode == "auto" and self.device.device == "cpu"
        )
        self.batcher: KeyedBatcher[ChunkRequest, ChunkResult] = KeyedBatcher(
            self._run_batch,
            model.batching,
            on_batch=self._record_batch,
            on_queued=lambda depth: self._m_queue.set(depth),
            cost=(lambda item: slot_cost(item, packing)) if self.packing_enabled else None,
        )
        self.clips_per_window: Counter[int] = Counter()
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        # Serve adds its own tags to the dict it is given, so each metric gets a copy.
        tags = {"model": model.name}
        self._m_batch = metrics.Histogram(
            "whisper_batch_size",
            description="Chunks decoded per batched generate call.",
            boundaries=_BATCH_BOUNDARIES,
            tag_keys=("model",),
        )
        self._m_batch.set_default_tags(dict(tags))
        self._m_batch_seconds = metrics.Histogram(
            "whisper_batch_seconds",
            description="Wall time of one batched decode.",
            boundaries=[0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64],
            tag_keys=("model",),
        )
        self._m_batch_seconds.set_default_tags(dict(tags))
        self._m_queue_wait = metrics.Histogram(
            "whisper_chunk_queue_wait_seconds",
            description="Time the oldest chunk of a batch waited in the queue.",
            boundaries=[0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32],
            tag_keys=("model",),
        )
        self._m_queue_wait.set_default_tags(dict(tags))
        self._m_audio = metrics.Counter(
            "whisper_audio_seconds_total",
            description="Seconds of speech decoded.",
            tag_keys=("model",),
        )
        self._m_audio.set_default_tags(dict(tags))
        self._m_rtf = metrics.Histogram(
            "whisper_batch_rtf",
            description="Real-time factor of a batch (compute seconds / audio seconds).",
            boundaries=[0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2],
            tag_keys=("model",),
        )
        self._m_rtf.set_default_tags(dict(tags))
        self._m_queue = metrics.Gauge(
            "whisper_queue_depth", description="Chunks waiting for a batch.", tag_keys=("model",)
        )
        self._m_queue.set_default_tags(dict(tags))
        self._m_clips = metrics.Histogram(
            "whisper_clips_per_window",
            description="Chunks that shared one 30 s window (window packing).",
            boundaries=[1, 2, 3, 4, 5, 6, 8, 10, 12],
            tag_keys=("model",),
        )
        self._m_clips.set_default_tags(dict(tags))
        self._last_audio_s = 0.0
        logger.info(
            "Transcriber %s ready on %s/%s (%s), cpu_threads=%d, pid=%d",
            model.name,
            self.device.device,
            self.device.compute_type,
            self.device.reason,
            model.effective_cpu_threads,
            os.getpid(),
        )

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live batch tuning: `serve deploy` with a new `user_config` lands here."""
        settings = BatchSettings.model_validate(user_config or {})
        self.batcher.update(settings)
        logger.info("Transcriber %s batch settings now %s", self.config.name, settings)

    async def transcribe_chunk(self, request: ChunkRequest) -> ChunkResult:
        return await self.batcher.submit(
            request.options.batch_key(), request, priority=request.priority
        )

    async def check_options(self, options: DecodeOptions) -> DecodeOptions:
        return self.engine.check_options(options)

    async def detect_language(self, chunks: Sequence[np.ndarray]) -> LanguageGuess:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.engine.detect_language, chunks)

    async def describe(self) -> dict[str, Any]:
        return {
            "name": self.config.name,
            "multilingual": self.engine.multilingual,
            "languages": self.engine.supported_languages,
            "device": self.device.device,
            "compute_type": self.device.compute_type,
            "gpu_ids": self.gpu_ids,
            "assigned_resources": ray.get_runtime_context().get_assigned_resources(),
            "replica": self.replica_id,
            "node_id": ray.get_runtime_context().get_node_id(),
        }

    async def stats(self) -> dict[str, Any]:
        return {
            "replica": self.replica_id,
            "batches": self.batcher.batches,
            "batch_sizes": dict(self.batcher.size_histogram),
            "queued": self.batcher.queued,
            "settings": self.batcher.settings.model_dump(),
            "packing": self.packing_enabled,
            "clips_per_window": dict(self.clips_per_window),
            "packed_fallbacks": self.engine.packed_fallbacks,
        }

    async def _run_batch(self, items: Sequence[ChunkRequest]) -> list[ChunkResult]:
        self._last_audio_s = sum(item.duration for item in items)
        packing = self.config.packing
        if self.packing_enabled:
            windows = plan_windows(items, packing)
        else:
            windows = [Window([i], [0.0]) for i in range(len(items))]
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(
                self._executor,
                self.engine.transcribe_windows,
                items,
                windows,
                packing.gap_s,
                self.batcher.settings.max_batch_size,
            )
        except ServiceError:
            raise
        except Exception as exc:
            logger.exception("batch of %d failed in the model", len(items))
            raise InferenceFailed(f"the model failed on this batch: {exc}") from exc
        clips = [1] * len(items)
        for window in windows:
            self.clips_per_window[len(window.items)] += 1
            self._m_clips.observe(len(window.items))
            for index in window.items:
                clips[index] = len(window.items)
        size = len(items)
        return [
            ChunkResult(segments=s, batch_size=size, replica=self.replica_id, window_clips=c)
            for s, c in zip(outputs, clips, strict=True)
        ]

    def _record_batch(self, record: BatchRecord) -> None:
        self._m_batch.observe(record.size)
        self._m_batch_seconds.observe(record.run_s)
        self._m_queue_wait.observe(record.queue_wait_s)
        self._m_audio.inc(self._last_audio_s)
        if self._last_audio_s > 0:
            self._m_rtf.observe(record.run_s / self._last_audio_s)
        logger.info(
            "batch model=%s size=%d key=%s queue_wait=%.3fs run=%.3fs audio=%.1fs queued=%d",
            self.config.name,
            record.size,
            record.key,
            record.queue_wait_s,
            record.run_s,
            self._last_audio_s,
            self.batcher.queued,
        )
