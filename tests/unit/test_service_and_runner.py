"""TranscriptionService and JobRunner directly, on the in-process stack (no Ray, real stores)."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import numpy as np
import pytest

from serve_app.config import AppConfig
from serve_app.errors import AudioTooLong, BadRequest, EmptyFile, UnknownModel
from serve_app.jobs.runner import JobRunner, chunk_to_record, record_to_chunk, result_key
from serve_app.options import Caller, TranscribeOptions
from serve_app.pipeline.decode import SAMPLE_RATE, decode_audio
from serve_app.pipeline.service import TranscriptionService
from serve_app.results import TranscriptionResult
from serve_app.stores import open_blob_store, open_job_store
from serve_app.stores.records import Job, JobStatus, NewJob
from serve_app.testing import LocalStack
from tests.text import wer
from tests.unit.conftest import LOOP, wait_job

pytestmark = LOOP

# Timestamps on, packing off: a chunk decoded alone on resume decodes as it did in a batch.
JOB_OPTIONS = TranscribeOptions(model="tiny.en", segment_timestamps=True, pack=False)


# ---- TranscriptionService ------------------------------------------------------------------


async def test_transcribe_bytes_and_array_agree(stack: LocalStack, data_dir, reference_texts):
    audio = (data_dir / "hello.wav").read_bytes()
    options = TranscribeOptions(segment_timestamps=True)
    from_bytes = await stack.service.transcribe(audio, options)
    assert wer(reference_texts["hello.wav"], from_bytes.text) < 0.2, from_bytes.text
    assert from_bytes.model == "tiny.en" and from_bytes.language == "en"
    assert from_bytes.chunks == 1 and 4.0 < from_bytes.duration < 5.0
    assert [s.id for s in from_bytes.segments] == list(range(1, len(from_bytes.segments) + 1))

    samples = decode_audio(audio, max_duration_s=60).samples
    assert samples.dtype == np.float32 and samples.ndim == 1
    from_array = await stack.service.transcribe(samples, options, Caller(tenant="t2"))
    assert from_array.text == from_bytes.text
    assert from_array.duration == pytest.approx(samples.size / SAMPLE_RATE, abs=1e-3)
    as_float64 = await stack.service.transcribe(samples.astype(np.float64), options)
    assert as_float64.text == from_bytes.text


async def test_transcribe_with_word_timestamps(stack: LocalStack, data_dir):
    audio = (data_dir / "train.wav").read_bytes()
    result = await stack.service.transcribe(audio, TranscribeOptions(word_timestamps=True))
    words = result.words
    assert words and "".join(w.word for w in words).replace(" ", "") == result.text.replace(" ", "")
    assert all(0 <= w.start <= w.end <= result.duration + 0.5 for w in words)
    # The result survives its JSON form (how jobs store it).
    assert TranscriptionResult.from_json(result.to_json()) == result


@pytest.mark.parametrize(
    ("audio", "error", "match"),
    [
        (np.zeros((2, 16000), dtype=np.float32), BadRequest, "1-D"),
        (np.zeros(0, dtype=np.float32), EmptyFile, "empty"),
        (np.zeros(16000, dtype=np.int16), BadRequest, "float"),
        (np.array([0.0, np.nan, 0.0] * 1000, dtype=np.float32), BadRequest, "NaN"),
        (np.array([0.0, np.inf] * 1000, dtype=np.float64), BadRequest, "NaN or infinite"),
        ("hello.wav", BadRequest, "bytes"),
        ([0.0] * 16000, BadRequest, "bytes"),
        (b"", EmptyFile, "empty"),
    ],
)
async def test_transcribe_refuses_bad_audio(stack: LocalStack, audio: Any, error, match):
    with pytest.raises(error, match=match):
        await stack.service.transcribe(audio, TranscribeOptions())


async def test_transcribe_refuses_bad_options(stack: LocalStack, data_dir):
    samples = np.zeros(SAMPLE_RATE, dtype=np.float32)
    with pytest.raises(UnknownModel):
        await stack.service.transcribe(samples, TranscribeOptions(model="large-v9"))
    with pytest.raises(BadRequest, match="English-only"):
        await stack.service.transcribe(samples, TranscribeOptions(task="translate"))
    with pytest.raises(BadRequest, match="unsupported language"):
        await stack.service.transcribe(samples, TranscribeOptions(language="xx"))


async def test_audio_length_limit(stack: LocalStack):
    raw = stack.config.model_dump()
    config = AppConfig.model_validate({**raw, "limits": {"max_audio_duration_s": 1.0}})
    service = TranscriptionService(config, stack.models)
    try:
        with pytest.raises(AudioTooLong):
            await service.transcribe(np.zeros(2 * SAMPLE_RATE, np.float32), TranscribeOptions())
    finally:
        service.close()


async def test_silence_has_no_chunks_and_no_text(stack: LocalStack):
    result = await stack.service.transcribe(
        np.zeros(2 * SAMPLE_RATE, np.float32), TranscribeOptions()
    )
    assert result.text == "" and result.chunks == 0 and result.segments == []
    assert result.duration == 2.0


async def test_run_chunks_yields_every_chunk(stack: LocalStack, data_dir):
    audio = (data_dir / "story.flac").read_bytes()
    prepared = await stack.service.prepare(audio, JOB_OPTIONS, Caller())
    assert 42 < prepared.plan.duration < 44  # known before VAD is done
    total = len((await prepared.feed.complete()).chunks)
    assert total == 2
    assert prepared.language.language == "en" and prepared.options.language == "en"
    results = {}
    async for index, chunk in stack.service.run_chunks(prepared):
        assert index not in results
        results[index] = chunk
    assert sorted(results) == list(range(total))
    assert all(r.segments for r in results.values())

    only_last = [i async for i, _ in stack.service.run_chunks(prepared, skip={0})]
    assert only_last == [1]
    assert [i async for i, _ in stack.service.run_chunks(prepared, skip={0, 1})] == []

    transcript = stack.service.assemble(prepared, results)
    assert transcript.chunks == 2 and len(transcript.batch_sizes) == 2
    assert transcript.text.startswith("Once upon a time")
    starts = [s.start for s in transcript.segments]
    assert starts == sorted(starts) and transcript.segments[-1].end <= prepared.plan.duration
    assert transcript.segments[-1].start > 20  # chunk 1's times are mapped back


# ---- JobRunner -----------------------------------------------------------------------------


def _job(stack: LocalStack, audio: bytes, options: TranscribeOptions = JOB_OPTIONS) -> Job:
    """A queued job created straight in the store, its audio in the blob store."""
    sha = hashlib.sha256(audio).hexdigest()
    with (
        open_job_store(stack.config.storage.database_url) as store,
        open_blob_store(stack.config.storage.blob_url) as blobs,
    ):
        key = f"audio/{sha[:2]}/{sha}"
        blobs.put(key, audio)
        job, created = store.create_job(
            NewJob(
                tenant="default",
                model="tiny.en",
                options=options.model_dump(mode="json", exclude={"model"}),
                audio_key=key,
                audio_sha256=sha,
            )
        )
    assert created
    return job


def _runner(stack: LocalStack, store, blobs, name: str) -> JobRunner:
    return JobRunner(stack.service, store, blobs, worker_id=name)


async def test_runner_resumes_from_checkpoints(idle_stack: LocalStack, data_dir):
    stack = idle_stack  # tracker stopped: only these runners touch the jobs
    audio = (data_dir / "story.flac").read_bytes()
    first_job, resumed_job = _job(stack, audio), _job(stack, audio)
    events: list[tuple[str, dict[str, Any]]] = []

    def publish(kind: str, data: dict[str, Any]) -> None:
        events.append((kind, data))

    with (
        open_job_store(stack.config.storage.database_url) as store,
        open_blob_store(stack.config.storage.blob_url) as blobs,
    ):
        # An uninterrupted run: both chunks computed and checkpointed.
        first = _runner(stack, store, blobs, "first")
        key = await first.run(first_job, lambda *_: None)
        assert key == result_key(first_job.id)
        assert first.chunks_computed == 2 and first.duplicate_checkpoints == 0
        uninterrupted = TranscriptionResult.from_json(blobs.get(key))
        checkpoints = store.load_checkpoints(first_job.id)
        assert [cp.chunk_index for cp in checkpoints] == [0, 1]
        assert {cp.computed_by for cp in checkpoints} == {"first"}

        # A run that stopped after chunk 0 left that checkpoint behind.
        assert store.save_checkpoint(resumed_job.id, 0, checkpoints[0].result, "crashed")
        assert not store.save_checkpoint(resumed_job.id, 0, checkpoints[0].result, "again")
        assert store.get_job(resumed_job.id).done_chunks == 1

        second = _runner(stack, store, blobs, "second")
        key = await second.run(resumed_job, publish)
        assert second.chunks_computed == 1  # only the missing chunk
        resumed = TranscriptionResult.from_json(blobs.get(key))
        assert resumed.text == uninterrupted.text
        assert resumed.segments == uninterrupted.segments
        assert resumed.duration == uninterrupted.duration
        assert [cp.computed_by for cp in store.load_checkpoints(resumed_job.id)] == [
            "crashed",
            "second",
        ]
        row = store.get_job(resumed_job.id)
        assert row.total_chunks == 2 and row.done_chunks == 2

        progress = [d for k, d in events if k == "progress"]
        assert progress[0]["done_chunks"] == 1 and progress[0]["progress"] == 0.5
        assert [d.get("chunk_index") for d in progress[1:]] == [1]
        assert progress[-1]["done_chunks"] == 2 and progress[-1]["progress"] == 1.0

        # Everything checkpointed: a third run computes nothing and writes the same result.
        third = _runner(stack, store, blobs, "third")
        await third.run(resumed_job, lambda *_: None)
        assert third.chunks_computed == 0
        assert TranscriptionResult.from_json(blobs.get(key)) == resumed


async def test_checkpoint_records_round_trip(stack: LocalStack, data_dir):
    prepared = await stack.service.prepare(
        (data_dir / "numbers.wav").read_bytes(), JOB_OPTIONS, Caller()
    )
    [(index, chunk)] = [item async for item in stack.service.run_chunks(prepared)]
    record = chunk_to_record(chunk, prepared.language)
    assert record["language"] == "en" and record["language_probability"] == 1.0
    again = record_to_chunk(record)
    assert index == 0 and again.segments == chunk.segments
    assert again.batch_size == chunk.batch_size


async def test_tracker_skips_checkpointed_chunks(idle_stack: LocalStack, client, data_dir):
    """A job that a dead tracker left half done is finished by the next one."""
    stack = idle_stack
    assert stack.tracker is not None
    audio = (data_dir / "story.flac").read_bytes()
    reference_job, job = _job(stack, audio), _job(stack, audio)
    with (
        open_job_store(stack.config.storage.database_url) as store,
        open_blob_store(stack.config.storage.blob_url) as blobs,
    ):
        runner = _runner(stack, store, blobs, "reference")
        reference = TranscriptionResult.from_json(
            blobs.get(await runner.run(reference_job, lambda *_: None))
        )
        # Chunk 1 finished first on the dead tracker; chunk 0 is left to do.
        [_, last] = store.load_checkpoints(reference_job.id)
        store.save_checkpoint(job.id, 1, last.result, "dead-tracker")
        store.cancel_job(reference_job.id, None)  # keep the reference out of the queue

    stack.tracker.start()
    await stack.tracker.wake()
    done = await wait_job(client, job.id)
    assert done["status"] == "succeeded", done
    assert done["done_chunks"] == done["total_chunks"] == 2
    stats = await stack.tracker.stats()
    assert stats.chunks_computed == 1 and stats.duplicate_checkpoints == 0
    assert stats.outcomes == {"succeeded": 1}
    result = (await client.get(f"/v1/jobs/{job.id}/result?format=verbose_json")).json()
    assert result["text"] == reference.text
    assert [s["start"] for s in result["segments"]] == [s.start for s in reference.segments]
    row = await asyncio.to_thread(stack.jobs.store.get_job, job.id)
    assert row.status == JobStatus.SUCCEEDED and row.result_key == result_key(job.id)
