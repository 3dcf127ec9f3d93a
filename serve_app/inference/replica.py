"""ModelReplica: one loaded model, its cross-request batcher and its window packer.

This is the whole of a Transcriber replica except Ray: `deployments/transcriber.py` wraps
it in a Serve deployment (device from Ray's GPU assignment, metrics, replica id), and
`serve_app.testing` runs it in-process. Both call exactly this code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np

from serve_app.config import BatchSettings, ModelConfig
from serve_app.errors import InferenceFailed, ServiceError
from serve_app.inference.batcher import BatchRecord, KeyedBatcher
from serve_app.inference.engine import WhisperEngine
from serve_app.inference.packing import WindowPacker
from serve_app.inference.protocol import ChunkRequest, ChunkResult, ReplicaInfo, ReplicaStats
from serve_app.inference.weights import DevicePlan
from serve_app.options import INTERACTIVE_PRIORITY
from serve_app.results import LanguageGuess

logger = logging.getLogger("ray.serve")


class BatchObserver(Protocol):
    """Receives what each batch looked like (the deployment passes Prometheus metrics)."""

    def batch_done(
        self, record: BatchRecord, audio_s: float, clips_per_window: list[int]
    ) -> None: ...

    def queue_depth(self, depth: int) -> None: ...


class ModelReplica:
    """Decodes same-option chunks from all callers together, packing short ones."""

    def __init__(
        self,
        model: ModelConfig,
        weights: Path,
        device: DevicePlan,
        *,
        replica_id: str = "local",
        observer: BatchObserver | None = None,
    ) -> None:
        self.config = model
        self.device = device
        self.replica_id = replica_id
        self.observer = observer
        self.engine = WhisperEngine(
            weights,
            device=device.device,
            compute_type=device.compute_type,
            cpu_threads=model.effective_cpu_threads,
            workers=model.concurrent_batches,
        )
        # One thread per CTranslate2 worker: that many batches run at once, no more.
        self._executor = ThreadPoolExecutor(
            max_workers=model.concurrent_batches, thread_name_prefix="whisper"
        )
        mode = model.packing.mode
        self.packer = WindowPacker(
            model.packing, enabled=mode == "on" or (mode == "auto" and device.device == "cpu")
        )
        self.batcher: KeyedBatcher[ChunkRequest, ChunkResult] = KeyedBatcher(
            self._run_batch,
            model.batching,
            on_batch=self._record_batch,
            on_queued=observer.queue_depth if observer is not None else None,
            cost=self.packer.cost if self.packer.enabled else None,
            linger=self._more_coming,
            urgent_priority=INTERACTIVE_PRIORITY,
            concurrency=model.concurrent_batches,
        )
        self.clips_per_window: Counter[int] = Counter()
        self._last_batch: tuple[float, list[int]] = (0.0, [])
        # (source, batch key) -> (chunks it said were still to come, when, its hint_seq):
        # what a batch of that key may wait for.
        self._incoming: dict[tuple[str, str], tuple[int, float, int]] = {}

    def reconfigure(self, settings: BatchSettings) -> None:
        """Live batch tuning; the next batch uses the new limits."""
        self.batcher.update(settings)
        logger.info("Transcriber %s batch settings now %s", self.config.name, settings)

    async def transcribe_chunk(self, request: ChunkRequest) -> ChunkResult:
        started = time.monotonic()
        key = request.options.batch_key()
        self._note_hint(request, key, started)
        result = await self.batcher.submit(key, request, priority=request.priority)
        waited = time.monotonic() - started - result.batch_s
        return replace(result, queue_s=round(max(0.0, waited), 4))

    async def detect_language(self, chunks: Sequence[np.ndarray]) -> LanguageGuess:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.engine.detect_language, chunks)

    def describe(self) -> ReplicaInfo:
        return ReplicaInfo(
            name=self.config.name,
            multilingual=self.engine.multilingual,
            languages=tuple(self.engine.supported_languages),
            device=self.device.device,
            compute_type=self.device.compute_type,
            replica=self.replica_id,
        )

    def stats(self) -> ReplicaStats:
        return ReplicaStats(
            replica=self.replica_id,
            batches=self.batcher.batches,
            batch_sizes=dict(self.batcher.size_histogram),
            queued=self.batcher.queued,
            settings=self.batcher.settings,
            packing=self.packer.enabled,
            clips_per_window=dict(self.clips_per_window),
            packed_fallbacks=self.engine.packed_fallbacks,
        )

    def _note_hint(self, request: ChunkRequest, key: str, now: float) -> None:
        """Keep a source's newest word on what is coming (calls arrive in any order)."""
        if request.incoming is None:
            return
        hint = (request.source, key)
        last = self._incoming.get(hint)
        if last is None or not request.hint_seq or request.hint_seq > last[2]:
            self._incoming[hint] = (request.incoming, now, request.hint_seq)

    def _more_coming(self, queued: Sequence[ChunkRequest]) -> bool | None:
        """Callers' word on what is coming: see `KeyedBatcher` (`linger`)."""
        if not queued:
            return None
        key = queued[0].options.batch_key()
        now = time.monotonic()
        fresh = self.batcher.settings.max_linger_s
        for (source, hinted), (count, at, _seq) in list(self._incoming.items()):
            if now - at > fresh:
                del self._incoming[(source, hinted)]  # stale: a request failed or went quiet
            elif count > 0 and hinted == key:
                return True
        if all(item.incoming is not None for item in queued):
            return False
        return None

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run_batch(self, items: Sequence[ChunkRequest]) -> list[ChunkResult]:
        started = time.monotonic()
        windows = self.packer.plan(items)
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(
                self._executor,
                self.engine.transcribe_windows,
                items,
                windows,
                self.batcher.settings.max_batch_size,
                self.packer,
            )
        except ServiceError:
            raise
        except Exception as exc:
            logger.exception("batch of %d failed in the model", len(items))
            raise InferenceFailed(f"the model failed on this batch: {exc}") from exc
        clips = [1] * len(items)
        for window in windows:
            self.clips_per_window[len(window.items)] += 1
            for index in window.items:
                clips[index] = len(window.items)
        self._last_batch = (
            sum(item.duration for item in items),
            [len(w.items) for w in windows],
        )
        size = len(items)
        run_s = round(time.monotonic() - started, 4)
        return [
            ChunkResult(
                segments=s, batch_size=size, replica=self.replica_id, window_clips=c, batch_s=run_s
            )
            for s, c in zip(outputs, clips, strict=True)
        ]

    def _record_batch(self, record: BatchRecord) -> None:
        audio_s, windows = self._last_batch
        if self.observer is not None:
            self.observer.batch_done(record, audio_s, windows)
        logger.info(
            "batch model=%s size=%d key=%s queue_wait=%.3fs run=%.3fs audio=%.1fs queued=%d",
            self.config.name,
            record.size,
            record.key,
            record.queue_wait_s,
            record.run_s,
            audio_s,
            self.batcher.queued,
        )
