"""TranscriptionService: audio in, transcript out, through the model deployments.

Used by the HTTP routes, the DeploymentHandle entry and (later) the job tracker, so every
caller goes through the same decode → VAD → cross-request batching path.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, TypeVar

import numpy as np
from ray.exceptions import RayActorError

from serve_app.audio import SAMPLE_RATE, ChunkPlan, decode_audio, plan_chunks, restore_timestamps
from serve_app.config import AppConfig, ModelConfig
from serve_app.engine import check_options
from serve_app.errors import (
    AudioTooLong,
    BackendUnavailable,
    BadRequest,
    EmptyFile,
    Overloaded,
    ServiceError,
    UnknownModel,
)
from serve_app.results import (
    ChunkRequest,
    ChunkResult,
    DecodeOptions,
    LanguageGuess,
    TranscribeRequest,
    TranscriptionResult,
)

logger = logging.getLogger("ray.serve")

T = TypeVar("T")
# Bounds object-store memory for very long files: chunks beyond this wait their turn.
_MAX_CHUNKS_IN_FLIGHT = 32
_CHUNK_RETRIES = 2


class TranscriptionService:
    """Orchestrates one transcription across the per-model Transcriber deployments."""

    def __init__(self, config: AppConfig, transcribers: Mapping[str, Any]) -> None:
        missing = {m.name for m in config.models} - set(transcribers)
        if missing:
            raise ValueError(f"no transcriber handle for models {sorted(missing)}")
        self.config = config
        self._handles = dict(transcribers)
        self._info: dict[str, dict[str, Any]] = {}

    def resolve_model(self, requested: str | None) -> ModelConfig:
        model = self.config.resolve_model(requested)
        if model is None:
            known = ", ".join(sorted(self.config.model_ids()))
            raise UnknownModel(f"model {requested!r} does not exist; available: {known}")
        return model

    async def model_info(self, name: str) -> dict[str, Any]:
        if name not in self._info:
            self._info[name] = await self._call(self._handles[name].describe.remote())
        return self._info[name]

    async def transcribe(
        self, audio: bytes | np.ndarray, request: TranscribeRequest
    ) -> TranscriptionResult:
        """Transcribe or translate one audio input; raises ServiceError subclasses."""
        model = self.resolve_model(request.model)
        info = await self.model_info(model.name)
        options = check_options(request.decode_options(), info["multilingual"], info["languages"])
        samples = await self._samples(audio)
        plan = await asyncio.to_thread(plan_chunks, samples)
        try:
            return await asyncio.wait_for(
                self._transcribe_plan(model, plan, options, request),
                timeout=self.config.limits.request_timeout_s,
            )
        except TimeoutError as exc:
            raise Overloaded(
                f"transcription did not finish within {self.config.limits.request_timeout_s:.0f} s"
            ) from exc

    async def _transcribe_plan(
        self,
        model: ModelConfig,
        plan: ChunkPlan,
        options: DecodeOptions,
        request: TranscribeRequest,
    ) -> TranscriptionResult:
        handle = self._handles[model.name]
        guess = LanguageGuess(options.language or "en", 1.0)
        if options.language is None and plan.chunks:
            guess = await self._call(handle.detect_language.remote(_first_window(plan.chunks)))
            options = options.with_language(guess.language)
        elif options.language is None:
            options = options.with_language("en")
        request_id = uuid.uuid4().hex
        chunk_requests = [
            ChunkRequest(
                audio=chunk,
                offset=meta["offset"],
                duration=meta["duration"],
                options=options,
                priority=request.priority,
                tenant=request.tenant,
                request_id=request_id,
                index=i,
            )
            for i, (chunk, meta) in enumerate(zip(plan.chunks, plan.metadata, strict=True))
        ]
        started = time.monotonic()
        results: list[ChunkResult] = await _bounded_gather(
            (self._transcribe_chunk(handle, c) for c in chunk_requests), _MAX_CHUNKS_IN_FLIGHT
        )
        segments = [seg for result in results for seg in result.segments]
        segments = restore_timestamps(segments, plan)
        for i, segment in enumerate(segments, start=1):
            segment.id = i
        batch_sizes = [r.batch_size for r in results]
        logger.info(
            "request %s model=%s chunks=%d audio=%.1fs batch_sizes=%s took=%.2fs",
            request_id[:8],
            model.name,
            len(results),
            plan.duration,
            batch_sizes,
            time.monotonic() - started,
        )
        return TranscriptionResult(
            text="".join(s.text for s in segments).strip(),
            language=guess.language if options.language is None else options.language,
            language_probability=guess.probability,
            duration=round(plan.duration, 3),
            duration_after_vad=round(plan.duration_after_vad, 3),
            segments=segments,
            model=model.name,
            options=options,
            chunks=len(results),
            batch_sizes=batch_sizes,
        )

    async def _transcribe_chunk(self, handle: Any, chunk: ChunkRequest) -> ChunkResult:
        for attempt in range(_CHUNK_RETRIES + 1):
            try:
                return await handle.transcribe_chunk.remote(chunk)
            except RayActorError as exc:
                # A replica died (crash, scale-down, node loss): the chunk is idempotent.
                if attempt == _CHUNK_RETRIES:
                    raise BackendUnavailable("the model replica is unavailable; retry") from exc
                logger.warning("replica died during chunk %d; retrying", chunk.index)
                await asyncio.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _call(self, response: Awaitable[T]) -> T:
        try:
            return await response
        except ServiceError:
            raise
        except RayActorError as exc:
            raise BackendUnavailable("the model replica is unavailable; retry") from exc

    async def _samples(self, audio: bytes | np.ndarray) -> np.ndarray:
        limits = self.config.limits
        if isinstance(audio, np.ndarray):
            return _validate_array(audio, limits.max_audio_duration_s)
        if not isinstance(audio, bytes | bytearray | memoryview):
            raise BadRequest("audio must be bytes (an encoded file) or a 16 kHz float32 array")
        decoded = await asyncio.wait_for(
            asyncio.to_thread(
                decode_audio,
                bytes(audio),
                max_duration_s=limits.max_audio_duration_s,
                timeout_s=limits.decode_timeout_s,
            ),
            timeout=limits.decode_timeout_s + 5,
        )
        return decoded.samples


def _validate_array(audio: np.ndarray, max_duration_s: float) -> np.ndarray:
    if audio.ndim != 1:
        raise BadRequest(f"audio array must be 1-D mono, got shape {audio.shape}")
    if audio.size == 0:
        raise EmptyFile("the audio array is empty")
    if not np.issubdtype(audio.dtype, np.floating):
        raise BadRequest("audio array must be float samples in [-1, 1] at 16 kHz")
    if audio.size > max_duration_s * SAMPLE_RATE:
        raise AudioTooLong(f"audio is longer than the limit of {max_duration_s:.0f} s")
    samples = np.ascontiguousarray(audio, dtype=np.float32)
    if not np.isfinite(samples).all():
        raise BadRequest("audio array contains NaN or infinite samples")
    return samples


def _first_window(chunks: list[np.ndarray]) -> list[np.ndarray]:
    """The chunks that cover the first 30 s of speech (all language detection looks at)."""
    out: list[np.ndarray] = []
    total = 0
    for chunk in chunks:
        out.append(chunk)
        total += chunk.shape[0]
        if total >= 30 * SAMPLE_RATE:
            break
    return out


async def _bounded_gather(coros: Iterable[Awaitable[T]], limit: int) -> list[T]:
    """Like gather, but at most `limit` at once, and the first failure cancels the rest."""
    semaphore = asyncio.Semaphore(limit)

    async def run(coro: Awaitable[T]) -> T:
        async with semaphore:
            return await coro

    tasks = [asyncio.ensure_future(run(c)) for c in coros]
    if not tasks:
        return []
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = next((t for t in tasks if t.done() and not t.cancelled() and t.exception()), None)
        if failed is not None:
            raise failed.exception()  # type: ignore[misc]
        return [t.result() for t in tasks]
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
