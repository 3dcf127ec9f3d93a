"""TranscriptionService: audio in, transcript out, through the model deployments.

Used by the HTTP routes, the DeploymentHandle entry and (later) the job tracker, so every
caller goes through the same decode → VAD → cross-request batching path.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from ray.exceptions import RayActorError

from serve_app.audio import SAMPLE_RATE, ChunkPlan, DecoderPool, plan_chunks, restore_timestamps
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


@dataclass
class PreparedAudio:
    """Decoded, chunked audio with settled options: ready for the batching path."""

    model: str
    plan: ChunkPlan
    options: DecodeOptions
    language: LanguageGuess
    priority: int
    tenant: str
    pack: bool = True


class TranscriptionService:
    """Orchestrates one transcription across the per-model Transcriber deployments."""

    def __init__(self, config: AppConfig, transcribers: Mapping[str, Any]) -> None:
        missing = {m.name for m in config.models} - set(transcribers)
        if missing:
            raise ValueError(f"no transcriber handle for models {sorted(missing)}")
        self.config = config
        self._handles = dict(transcribers)
        self._info: dict[str, dict[str, Any]] = {}
        # Untrusted bytes are decoded in bounded child processes, started on first use.
        self._decoder = DecoderPool(
            config.limits.decode_workers, config.limits.decode_max_memory_mb
        )

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
        prepared = await self.prepare(audio, request)
        try:
            return await asyncio.wait_for(
                self._transcribe_prepared(prepared),
                timeout=self.config.limits.request_timeout_s,
            )
        except TimeoutError as exc:
            raise Overloaded(
                f"transcription did not finish within {self.config.limits.request_timeout_s:.0f} s"
            ) from exc

    async def prepare(
        self,
        audio: bytes | np.ndarray,
        request: TranscribeRequest,
        *,
        language: LanguageGuess | None = None,
    ) -> PreparedAudio:
        """Validate options, decode, cut VAD chunks and settle the language.

        `language` skips detection (a resumed job reuses what its first run detected).
        """
        model = self.resolve_model(request.model)
        info = await self.model_info(model.name)
        options = check_options(request.decode_options(), info["multilingual"], info["languages"])
        samples = await self._samples(audio)
        plan = await asyncio.to_thread(plan_chunks, samples)
        if language is None:
            language = LanguageGuess(options.language or "en", 1.0)
            if options.language is None and plan.chunks:
                handle = self._handles[model.name]
                language = await self._call(
                    handle.detect_language.remote(_first_window(plan.chunks))
                )
        return PreparedAudio(
            model=model.name,
            plan=plan,
            options=options.with_language(language.language),
            language=language,
            priority=request.priority,
            tenant=request.tenant,
            pack=request.pack,
        )

    async def run_chunks(
        self, prepared: PreparedAudio, indices: Iterable[int] | None = None
    ) -> AsyncIterator[tuple[int, ChunkResult]]:
        """Decode chunks through the shared batching path, yielding them as they finish."""
        handle = self._handles[prepared.model]
        wanted = range(len(prepared.plan.chunks)) if indices is None else list(indices)
        request_id = uuid.uuid4().hex
        semaphore = asyncio.Semaphore(_MAX_CHUNKS_IN_FLIGHT)

        async def one(i: int) -> tuple[int, ChunkResult]:
            async with semaphore:
                meta = prepared.plan.metadata[i]
                chunk = ChunkRequest(
                    audio=prepared.plan.chunks[i],
                    offset=meta["offset"],
                    duration=meta["duration"],
                    options=prepared.options,
                    priority=prepared.priority,
                    tenant=prepared.tenant,
                    request_id=request_id,
                    index=i,
                    packable=prepared.pack,
                )
                return i, await self._transcribe_chunk(handle, chunk)

        tasks = [asyncio.ensure_future(one(i)) for i in wanted]
        try:
            for next_done in asyncio.as_completed(tasks):
                yield await next_done
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()

    def assemble(
        self, prepared: PreparedAudio, results: Mapping[int, ChunkResult]
    ) -> TranscriptionResult:
        """Join chunk results (in chunk order) into the request's transcript."""
        ordered = [results[i] for i in range(len(prepared.plan.chunks))]
        segments = [copy.deepcopy(seg) for result in ordered for seg in result.segments]
        segments = restore_timestamps(segments, prepared.plan)
        for i, segment in enumerate(segments, start=1):
            segment.id = i
        return TranscriptionResult(
            text="".join(s.text for s in segments).strip(),
            language=prepared.language.language,
            language_probability=prepared.language.probability,
            duration=round(prepared.plan.duration, 3),
            duration_after_vad=round(prepared.plan.duration_after_vad, 3),
            segments=segments,
            model=prepared.model,
            options=prepared.options,
            chunks=len(ordered),
            batch_sizes=[r.batch_size for r in ordered],
            window_clips=[r.window_clips for r in ordered],
        )

    async def _transcribe_prepared(self, prepared: PreparedAudio) -> TranscriptionResult:
        started = time.monotonic()
        results = {i: result async for i, result in self.run_chunks(prepared)}
        transcript = self.assemble(prepared, results)
        logger.info(
            "transcribed model=%s chunks=%d audio=%.1fs batch_sizes=%s took=%.2fs",
            prepared.model,
            transcript.chunks,
            prepared.plan.duration,
            transcript.batch_sizes,
            time.monotonic() - started,
        )
        return transcript

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
        decoded = await self._decoder.decode(
            bytes(audio),
            max_duration_s=limits.max_audio_duration_s,
            timeout_s=limits.decode_timeout_s,
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
