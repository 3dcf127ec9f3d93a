"""Runs one leased job: audio → chunks (skipping checkpointed ones) → stages → result object.

Stages after the transcription (diarization, for `diarize=true`) are checkpointed once
each (`JobStore.save_stage`), so a restarted job redoes neither a finished transcription
nor a finished diarization.

Effects are idempotent so at-least-once execution is safe: checkpoints are insert-once,
the result object has a deterministic key and is written before the row that points to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from serve_app.inference.protocol import ChunkResult
from serve_app.options import Caller, TranscribeOptions
from serve_app.pipeline.diarize import SpeakerWindows
from serve_app.pipeline.service import PreparedAudio, TranscriptionService
from serve_app.results import LanguageGuess, segments_adapter
from serve_app.stores.blob import BlobStore
from serve_app.stores.job_store import JobStore
from serve_app.stores.records import Job

logger = logging.getLogger(__name__)

Publish = Callable[[str, dict[str, Any]], None]
DIARIZATION = "diarization"


def result_key(job_id: str) -> str:
    return f"results/{job_id}.json"


def job_options(job: Job) -> TranscribeOptions:
    """The options a job was submitted with (stored by `TranscribeOptions.model_dump`)."""
    return TranscribeOptions.model_validate({**job.options, "model": job.model})


def chunk_to_record(result: ChunkResult, language: LanguageGuess) -> dict[str, Any]:
    return {
        "segments": [asdict(s) for s in result.segments],
        "batch_size": result.batch_size,
        "language": language.language,
        "language_probability": language.probability,
    }


def record_to_chunk(record: dict[str, Any]) -> ChunkResult:
    segments = segments_adapter().validate_python(record["segments"])
    return ChunkResult(segments=segments, batch_size=int(record.get("batch_size", 1)))


class JobRunner:
    """Executes jobs for the tracker; owns no state beyond its collaborators."""

    def __init__(
        self,
        service: TranscriptionService,
        store: JobStore,
        blobs: BlobStore,
        worker_id: str,
    ) -> None:
        self.service = service
        self.store = store
        self.blobs = blobs
        self.worker_id = worker_id
        self.chunks_computed = 0
        self.duplicate_checkpoints = 0
        self.stages_computed: dict[str, int] = {}  # stage -> times this runner computed it
        self.durations: dict[str, float] = {}  # job id -> audio seconds, until metered

    async def run(self, job: Job, publish: Publish) -> str:
        """Process `job` to completion; returns the result key. Raises on failure."""
        checkpoints = await self.store.guard.run(self.store.load_checkpoints, job.id)
        done = {cp.chunk_index: cp.result for cp in checkpoints}
        language = None
        if done:
            first = next(iter(done.values()))
            language = LanguageGuess(first["language"], float(first["language_probability"]))
        audio = await self.blobs.guard.run(self.blobs.get, job.audio_key or "")
        prepared = await self.service.prepare(
            audio, job_options(job), Caller(job.tenant, job.priority), language=language
        )
        if prepared.channels:
            return await self._multichannel(job, prepared)
        # Chunks leave for the replicas as VAD cuts them; the total is known once it is done.
        announced = asyncio.ensure_future(self._announce_total(job, prepared, len(done), publish))
        started = time.monotonic()
        results: dict[int, ChunkResult] = {i: record_to_chunk(r) for i, r in done.items()}
        try:
            async for index, chunk in self.service.run_chunks(prepared, skip=done):
                total = await announced  # progress events after the total, as before
                record = chunk_to_record(chunk, prepared.language)
                new = await self.store.guard.run(
                    self.store.save_checkpoint, job.id, index, record, self.worker_id
                )
                self.chunks_computed += 1
                if not new:
                    self.duplicate_checkpoints += 1
                results[index] = chunk
                publish(
                    "progress",
                    {
                        "status": "running",
                        "done_chunks": len(results),
                        "total_chunks": total,
                        "progress": _ratio(len(results), total),
                        "chunk_index": index,
                        "text": "".join(s.text for s in chunk.segments).strip(),
                    },
                )
            await announced
        finally:
            if not announced.done():
                announced.cancel()
        prepared.timings["chunks"] = round(time.monotonic() - started, 4)
        return await self._store_result(job, prepared, results, publish)

    async def _announce_total(
        self, job: Job, prepared: PreparedAudio, done: int, publish: Publish
    ) -> int:
        """Once VAD is done: store the job's chunk count and publish the first progress."""
        total = len((await prepared.feed.complete()).chunks)
        await self.store.guard.run(self.store.set_total_chunks, job.id, total)
        publish(
            "progress",
            {
                "status": "running",
                "done_chunks": done,
                "total_chunks": total,
                "progress": _ratio(done, total),
            },
        )
        return total

    async def _multichannel(self, job: Job, prepared: PreparedAudio) -> str:
        """multichannel=true: the channels decode together, as one step (no chunk checkpoints:
        a chunk index names a chunk of one track)."""
        transcript = await self.service.transcribe_prepared(prepared)
        self.durations[job.id] = prepared.plan.duration
        key = result_key(job.id)
        await self.blobs.guard.run(self.blobs.put, key, transcript.to_json(), "application/json")
        return key

    async def _diarization(
        self, job: Job, prepared: PreparedAudio, publish: Publish
    ) -> SpeakerWindows:
        """The speaker windows: from the stage's checkpoint, or embedded and checkpointed."""
        stages = await self.store.guard.run(self.store.load_stages, job.id)
        if DIARIZATION in stages:
            return SpeakerWindows.from_lists(stages[DIARIZATION])
        publish("progress", {"status": "running", "stage": DIARIZATION})
        windows = await self.service.speaker_windows(prepared)
        await self.store.guard.run(
            self.store.save_stage, job.id, DIARIZATION, windows.to_lists(), self.worker_id
        )
        self.stages_computed[DIARIZATION] = self.stages_computed.get(DIARIZATION, 0) + 1
        return windows

    async def _store_result(
        self,
        job: Job,
        prepared: PreparedAudio,
        results: dict[int, ChunkResult],
        publish: Publish,
    ) -> str:
        transcript = self.service.assemble(prepared, results)
        if prepared.speakers is not None:
            windows = await self._diarization(job, prepared, publish)
            transcript = await self.service.label_speakers(prepared, transcript, windows)
        self.durations[job.id] = prepared.plan.duration
        body = transcript.to_json()
        key = result_key(job.id)
        # The object first: a row never points at a result that is not there.
        await self.blobs.guard.run(self.blobs.put, key, body, "application/json")
        return key


def _ratio(done: int, total: int) -> float:
    return 1.0 if total == 0 else round(done / total, 4)
