"""TranscriptionService: audio in, transcript out, through the model replicas.

Used by the HTTP routes, the DeploymentHandle entry and the job tracker, so every caller
goes through the same decode → VAD → cross-request batching path. It talks to replicas
only through `ModelClient`, so it runs the same against Ray or in-process replicas.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import itertools
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Container, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serve_app.config import AppConfig, ModelConfig
from serve_app.errors import (
    BackendUnavailable,
    BadRequest,
    Overloaded,
    UnknownModel,
    VocabularyNotFound,
)
from serve_app.inference.protocol import ChunkResult, ModelClient, ReplicaInfo
from serve_app.inference.speaker import SpeakerClient
from serve_app.options import Caller, DecodeOptions, FallbackPolicy, TranscribeOptions
from serve_app.pipeline.channels import merge_channels
from serve_app.pipeline.chunk_feed import ChunkFeed, ChunkPlanner
from serve_app.pipeline.chunk_runs import ChunkRun, ChunkTranscript, in_order, run_chunks
from serve_app.pipeline.chunking import ChunkPlan, restore_timestamps
from serve_app.pipeline.diarize import Diarizer, DiarizeRequest, SpeakerWindows
from serve_app.pipeline.references import diarize_request
from serve_app.pipeline.sandbox import DecoderPool
from serve_app.pipeline.timing import Clock, fit_to_model, validate_array
from serve_app.pipeline.vocabulary import VocabularySource, apply_spellings, hotwords_with
from serve_app.results import LanguageGuess, TranscriptionResult
from serve_app.stores import errors as store_errors
from serve_app.stores.records import Vocabulary

logger = logging.getLogger("ray.serve")

__all__ = ["ChunkTranscript", "PreparedAudio", "TranscriptionService"]


@dataclass
class PreparedAudio:
    """Decoded audio with settled options, its chunks cut (`feed`, filling while VAD runs
    over the rest): ready for the batching path."""

    model: str
    feed: ChunkFeed
    options: DecodeOptions
    language: LanguageGuess
    caller: Caller
    pack: bool = True
    fallback: FallbackPolicy = field(default_factory=FallbackPolicy)
    spellings: list[dict[str, Any]] = field(default_factory=list)  # from the vocabulary
    timings: dict[str, float] = field(default_factory=dict)  # phase -> seconds
    # diarize=true: the decoded samples (windows are cut from them) and the settings.
    samples: np.ndarray | None = None
    speakers: DiarizeRequest | None = None
    channels: list[PreparedAudio] = field(default_factory=list)  # multichannel: one each

    @property
    def plan(self) -> ChunkPlan:
        """The chunks cut so far; all of them once `feed.finished` (`duration` at once)."""
        return self.feed.plan


class TranscriptionService:
    """Orchestrates one transcription across the per-model Transcriber deployments."""

    def __init__(
        self,
        config: AppConfig,
        models: Mapping[str, ModelClient],
        speakers: SpeakerClient | None = None,
    ) -> None:
        missing = {m.name for m in config.models} - set(models)
        if missing:
            raise ValueError(f"no model client for models {sorted(missing)}")
        self.config = config
        self.models = dict(models)
        self._info: dict[str, ReplicaInfo] = {}
        # Requests still decoding or cutting chunks here, by the batch key their chunks will
        # have ("*model" while the language is still to be detected): replicas hold a batch
        # for them.
        self.source = uuid.uuid4().hex[:12]
        self._preparing: Counter[str] = Counter()
        self._hints = itertools.count(1)
        # Untrusted bytes are decoded in bounded child processes, started on first use.
        self._decoder = DecoderPool(
            config.limits.decode_workers, config.limits.decode_max_memory_mb
        )
        self._planner = ChunkPlanner(config.limits.vad_workers)
        # Where `vocabulary` ids are looked up: the job store, set by its owner.
        self.vocabularies: VocabularySource | None = None
        self.diarizer = Diarizer(config.diarization, speakers) if speakers else None

    def close(self) -> None:
        """Stop the decode child processes."""
        self._decoder.close()

    def resolve_model(self, requested: str | None) -> ModelConfig:
        model = self.config.resolve_model(requested)
        if model is None:
            known = ", ".join(sorted(self.config.model_ids()))
            raise UnknownModel(f"model {requested!r} does not exist; available: {known}")
        return model

    async def model_info(self, name: str) -> ReplicaInfo:
        if name not in self._info:
            self._info[name] = await self.models[name].describe()
        return self._info[name]

    async def transcribe(
        self, audio: bytes | np.ndarray, options: TranscribeOptions, caller: Caller | None = None
    ) -> TranscriptionResult:
        """Transcribe or translate one audio input; raises ServiceError subclasses."""
        prepared = await self.prepare(audio, options, caller or Caller())
        return await self.transcribe_prepared(prepared)

    async def transcribe_prepared(self, prepared: PreparedAudio) -> TranscriptionResult:
        """Decode prepared audio, capped at `limits.request_timeout_s` (`Overloaded`)."""
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
        options: TranscribeOptions,
        caller: Caller,
        *,
        language: LanguageGuess | None = None,
    ) -> PreparedAudio:
        """Check options against the model, decode, cut VAD chunks and settle the language.

        `language` skips detection (a resumed job reuses what its first run detected).
        """
        model = self.resolve_model(options.model)
        spellings: list[dict[str, Any]] = []
        if options.vocabulary:
            vocabulary = await self._vocabulary(options.vocabulary, caller.tenant)
            hotwords = hotwords_with(vocabulary.terms, options.hotwords)
            options = options.model_copy(update={"hotwords": hotwords})
            spellings = vocabulary.spellings
        decode = fit_to_model(options.decode_options(), await self.model_info(model.name))
        speakers = await self._speakers(options) if options.diarize else None
        clock = Clock()
        pending = decode.batch_key() if decode.language else f"*{model.name}"
        self._preparing[pending] += 1
        feeds: list[ChunkFeed] = []
        try:
            samples = await self._samples(audio, options.multichannel)
            clock.lap("decode")
            tracks = list(samples) if samples.ndim == 2 else [samples]  # multichannel: rows
            vad = options.vad_settings()
            feeds = [self._planner.start(track, vad) for track in tracks]
            feed = feeds[0]
            if len(feeds) > 1:  # the language comes from the first channel with speech
                plans = [await f.complete() for f in feeds]
                feed = next((f for f, p in zip(feeds, plans, strict=True) if p.chunks), feed)
            if language is None:
                language = LanguageGuess(decode.language or "en", 1.0)
                if decode.language is None:
                    window = await feed.first_window()  # VAD goes on over the rest
                    if window:
                        client = self.models[model.name]
                        language = await client.detect_language(window)
            clock.lap("language")
        except BaseException:
            for started in feeds:
                started.abandon()
            raise
        finally:
            # Until VAD is done, more chunks of this request may join batches of its key.
            done = feeds[0] if len(feeds) == 1 else None
            if done is None:
                self._preparing[pending] -= 1
            else:
                done.on_end(lambda: self._prepared(pending))
        prepared = PreparedAudio(
            model=model.name,
            feed=feed,
            options=decode.with_language(language.language),
            language=language,
            caller=caller,
            # Packed rows have their own token budget: max_new_tokens decodes alone.
            pack=options.pack and options.max_new_tokens is None,
            fallback=options.fallback_policy(),
            spellings=spellings,
            timings=clock.laps,
            samples=samples if speakers is not None else None,
            speakers=speakers,
        )
        if options.multichannel:
            prepared.channels = [dataclasses.replace(prepared, feed=f) for f in feeds]
        return prepared

    async def _speakers(self, options: TranscribeOptions) -> DiarizeRequest:
        if self.diarizer is None:
            raise BadRequest("diarization is not enabled on this server (speaker_embedder)")
        return await diarize_request(options, self.config.diarization, self._decoder)

    async def speaker_windows(self, prepared: PreparedAudio) -> SpeakerWindows:
        """Embedded windows over the speech of prepared audio (diarize=true only)."""
        if self.diarizer is None or prepared.samples is None:
            raise BadRequest("diarization was not requested")
        started = time.monotonic()
        plan = await prepared.feed.complete()
        windows = await self.diarizer.embed_windows(prepared.samples, plan.speech_timestamps)
        prepared.timings["embed"] = round(time.monotonic() - started, 4)
        return windows

    async def label_speakers(
        self, prepared: PreparedAudio, result: TranscriptionResult, windows: SpeakerWindows
    ) -> TranscriptionResult:
        """Put speakers on the transcript's words and segments (clustering runs here)."""
        if self.diarizer is None or prepared.speakers is None:
            return result
        clock = Clock()
        references = await self.diarizer.embed_references(prepared.speakers)
        result.segments = self.diarizer.label(
            result.segments, windows, prepared.speakers, references
        )
        result.timings["diarize"] = clock.lap("diarize")
        return result

    async def _vocabulary(self, vocabulary_id: str, tenant: str) -> Vocabulary:
        if self.vocabularies is None:
            raise BadRequest("vocabulary needs the job store (jobs.enabled)")
        try:
            return await asyncio.to_thread(self.vocabularies.get_vocabulary, vocabulary_id, tenant)
        except store_errors.NotFound as exc:
            raise VocabularyNotFound(f"vocabulary {vocabulary_id} not found") from exc
        except store_errors.StoreError as exc:
            raise BackendUnavailable(f"storage unavailable: {exc}") from exc

    def run_chunks(
        self, prepared: PreparedAudio, skip: Container[int] = ()
    ) -> AsyncIterator[tuple[int, ChunkResult]]:
        """Decode chunks (all but `skip`) through the shared batching path as VAD cuts them,
        yielding (index, result) as they finish."""
        key = prepared.options.batch_key()
        run = ChunkRun(
            client=self.models[prepared.model],
            feed=prepared.feed,
            options=prepared.options,
            caller=prepared.caller,
            pack=prepared.pack,
            fallback=prepared.fallback,
            source=self.source,
            coming=lambda: self._coming(key, prepared.model),
            hint_seq=lambda: next(self._hints),
        )
        return run_chunks(run, skip)

    def stream_chunks(self, prepared: PreparedAudio) -> AsyncIterator[ChunkTranscript]:
        """Chunks in audio order, each as soon as it and every chunk before it are done
        (`chunk_runs.in_order`), within `limits.request_timeout_s` (`Overloaded`, 503)."""
        return in_order(
            self.run_chunks(prepared),
            prepared.feed,
            prepared.spellings,
            self.config.limits.request_timeout_s,
        )

    def _prepared(self, pending: str) -> None:
        self._preparing[pending] -= 1

    def _coming(self, key: str, model: str) -> int:
        """Requests decoding here whose chunks may join batches of `key`."""
        return self._preparing[key] + self._preparing[f"*{model}"]

    def assemble(
        self, prepared: PreparedAudio, results: Mapping[int, ChunkResult]
    ) -> TranscriptionResult:
        """Join chunk results (in chunk order) into the request's transcript."""
        clock = Clock()
        ordered = [results[i] for i in range(len(prepared.plan.chunks))]
        segments = [copy.deepcopy(seg) for result in ordered for seg in result.segments]
        segments = restore_timestamps(segments, prepared.plan)
        segments = apply_spellings(segments, prepared.spellings)
        for i, segment in enumerate(segments, start=1):
            segment.id = i
        # The slowest chunk bounds the request: its wait in the queue and its batch's run.
        slowest = max(ordered, key=lambda r: r.queue_s + r.batch_s, default=None)
        timings = {**prepared.timings, "vad": prepared.feed.vad_s}
        if slowest is not None:
            timings.update(queue=slowest.queue_s, batch=slowest.batch_s)
        timings["assemble"] = clock.lap("assemble")
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
            timings=timings,
        )

    async def _transcribe_prepared(self, prepared: PreparedAudio) -> TranscriptionResult:
        if prepared.channels:  # all channels' chunks are in the batchers at once
            tracks = [self._transcribe_prepared(channel) for channel in prepared.channels]
            return merge_channels(list(await asyncio.gather(*tracks)))
        started = time.monotonic()
        # Speaker windows are embedded on their own deployment while the chunks decode.
        embedding = (
            asyncio.ensure_future(self.speaker_windows(prepared)) if prepared.speakers else None
        )
        try:
            results = {i: result async for i, result in self.run_chunks(prepared)}
            prepared.timings["chunks"] = round(time.monotonic() - started, 4)
            transcript = self.assemble(prepared, results)
            if embedding is not None:
                transcript = await self.label_speakers(prepared, transcript, await embedding)
        finally:
            if embedding is not None and not embedding.done():
                embedding.cancel()
        logger.info(
            "transcribed model=%s chunks=%d audio=%.1fs batch_sizes=%s took=%.2fs",
            prepared.model,
            transcript.chunks,
            prepared.plan.duration,
            transcript.batch_sizes,
            time.monotonic() - started,
        )
        return transcript

    async def _samples(self, audio: bytes | np.ndarray, multichannel: bool = False) -> np.ndarray:
        limits = self.config.limits
        if isinstance(audio, np.ndarray):
            return validate_array(
                audio, limits.max_audio_duration_s, limits.max_channels if multichannel else None
            )
        if not isinstance(audio, bytes | bytearray | memoryview):
            raise BadRequest("audio must be bytes (an encoded file) or a 16 kHz float32 array")
        decoded = await self._decoder.decode(
            bytes(audio),
            max_duration_s=limits.max_audio_duration_s,
            timeout_s=limits.decode_timeout_s,
            max_channels=limits.max_channels if multichannel else None,
        )
        return decoded.samples
