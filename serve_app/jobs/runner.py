"""Runs one leased job: audio → chunks (skipping checkpointed ones) → result in the blob store.

Effects are idempotent so at-least-once execution is safe: checkpoints are insert-once,
the result object has a deterministic key and is written before the row that points to it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from serve_app.errors import ServiceError
from serve_app.results import (
    ChunkResult,
    LanguageGuess,
    Segment,
    TranscribeRequest,
    Word,
)
from serve_app.service import PreparedAudio, TranscriptionService
from serve_app.stores.blob import BlobStore
from serve_app.stores.job_store import JobStore
from serve_app.stores.models import Job

logger = logging.getLogger(__name__)

# Errors that retrying cannot fix: the input itself is bad.
PERMANENT_CODES = frozenset(
    {
        "bad_request",
        "empty_file",
        "model_not_found",
        "payload_too_large",
        "audio_too_long",
        "unsupported_media_type",
        "undecodable_audio",
    }
)

Publish = Callable[[str, dict[str, Any]], None]


def result_key(job_id: str) -> str:
    return f"results/{job_id}.json"


def request_for(job: Job) -> TranscribeRequest:
    options = dict(job.options)
    return TranscribeRequest(
        model=job.model,
        task=options.get("task", "transcribe"),
        language=options.get("language"),
        prompt=options.get("prompt"),
        temperature=float(options.get("temperature", 0.0)),
        beam_size=int(options.get("beam_size", 5)),
        word_timestamps=bool(options.get("word_timestamps", False)),
        segment_timestamps=bool(options.get("segment_timestamps", True)),
        pack=bool(options.get("pack", True)),
        priority=job.priority,
        tenant=job.tenant,
    )


def chunk_to_record(result: ChunkResult, language: LanguageGuess) -> dict[str, Any]:
    return {
        "segments": [asdict(s) for s in result.segments],
        "batch_size": result.batch_size,
        "language": language.language,
        "language_probability": language.probability,
    }


def record_to_chunk(record: dict[str, Any]) -> ChunkResult:
    segments = [
        Segment(**{**s, "words": [Word(**w) for w in s["words"]] if s.get("words") else None})
        for s in record["segments"]
    ]
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

    async def run(self, job: Job, publish: Publish) -> str:
        """Process `job` to completion; returns the result key. Raises on failure."""
        checkpoints = await asyncio.to_thread(self.store.load_checkpoints, job.id)
        done = {cp.chunk_index: cp.result for cp in checkpoints}
        language = None
        if done:
            first = next(iter(done.values()))
            language = LanguageGuess(first["language"], float(first["language_probability"]))
        audio = await asyncio.to_thread(self.blobs.get, job.audio_key or "")
        prepared = await self.service.prepare(audio, request_for(job), language=language)
        total = len(prepared.plan.chunks)
        await asyncio.to_thread(self.store.set_total_chunks, job.id, total)
        publish(
            "progress",
            {
                "status": "running",
                "done_chunks": len(done),
                "total_chunks": total,
                "progress": _ratio(len(done), total),
            },
        )
        todo = [i for i in range(total) if i not in done]
        results: dict[int, ChunkResult] = {i: record_to_chunk(r) for i, r in done.items()}
        async for index, chunk in self.service.run_chunks(prepared, todo):
            record = chunk_to_record(chunk, prepared.language)
            new = await asyncio.to_thread(
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
        return await self._store_result(job, prepared, results)

    async def _store_result(
        self, job: Job, prepared: PreparedAudio, results: dict[int, ChunkResult]
    ) -> str:
        transcript = self.service.assemble(prepared, results)
        body = json.dumps(transcript.to_dict()).encode()
        key = result_key(job.id)
        # The object first: a row never points at a result that is not there.
        await asyncio.to_thread(self.blobs.put, key, body, "application/json")
        return key


def is_permanent(exc: BaseException) -> bool:
    return isinstance(exc, ServiceError) and exc.code in PERMANENT_CODES


def _ratio(done: int, total: int) -> float:
    return 1.0 if total == 0 else round(done / total, 4)
