"""Chunks cut while VAD runs: the same chunks as faster-whisper's, out before VAD is done."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
from faster_whisper.audio import decode_audio
from faster_whisper.vad import VadOptions, get_speech_timestamps
from faster_whisper.vad import collect_chunks as fw_collect_chunks

from serve_app.options import Caller, TranscribeOptions
from serve_app.pipeline import vad as vad_module
from serve_app.pipeline.chunk_feed import ChunkPlanner, FeedStopped
from serve_app.pipeline.chunking import CHUNK_LENGTH_S, DEFAULT_VAD, cut_chunks, plan_chunks
from tests.unit.conftest import LOOP

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def long_audio() -> np.ndarray:
    """About 3 minutes: speech, silence, noise and a clip cut mid-word, several chunks."""
    speech = decode_audio(str(DATA / "story.flac"))
    noise = np.random.default_rng(3).normal(0, 0.02, 16000 * 7).astype(np.float32)
    gap = np.zeros(16000 * 2, dtype=np.float32)
    return np.concatenate([speech, gap, speech[:54321], noise, speech, gap, speech, speech[:9999]])


def _pipeline_options() -> VadOptions:
    return VadOptions(
        threshold=DEFAULT_VAD.threshold,
        max_speech_duration_s=CHUNK_LENGTH_S,
        min_silence_duration_ms=DEFAULT_VAD.min_silence_duration_ms,
        speech_pad_ms=DEFAULT_VAD.speech_pad_ms,
    )


@pytest.mark.parametrize("vad", [DEFAULT_VAD, None], ids=["vad", "fixed-windows"])
def test_chunks_equal_faster_whispers(long_audio: np.ndarray, vad) -> None:
    if vad is None:
        step = CHUNK_LENGTH_S * 16000
        speech = [
            {"start": s, "end": min(s + step, long_audio.shape[0])}
            for s in range(0, long_audio.shape[0], step)
        ]
    else:
        speech = get_speech_timestamps(long_audio, _pipeline_options())
    chunks, metadata = fw_collect_chunks(long_audio, speech, max_duration=CHUNK_LENGTH_S)
    plan = plan_chunks(long_audio, vad)
    assert len(plan.chunks) == len(chunks) > 4
    for ours, theirs in zip(plan.chunks, chunks, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert plan.metadata == metadata
    assert plan.speech_timestamps == speech


def test_chunks_come_out_while_vad_runs(long_audio: np.ndarray, monkeypatch) -> None:
    """Chunks are handed out before VAD has read the audio after them (a chunk is final
    once the next speech segment would not fit in it); only the last one says so."""
    runs = []
    blocks = vad_module.probability_blocks

    def counted(*args, **kwargs):
        for block in blocks(*args, **kwargs):
            runs.append(block.shape[0])
            yield block

    monkeypatch.setattr(vad_module, "probability_blocks", counted)
    seen: list[tuple[int, bool]] = []
    speech: list[dict] = []
    cut_chunks(long_audio, DEFAULT_VAD, lambda c, m, last: seen.append((len(runs), last)), speech)
    total = len(runs)
    assert [last for _, last in seen] == [False] * (len(seen) - 1) + [True]
    assert seen[0][0] < total / 2  # the first chunk left with half of the audio unread
    assert sum(runs_then < total for runs_then, _ in seen) >= len(seen) / 2


@LOOP
async def test_feed_fills_while_vad_runs_and_ends_complete(long_audio: np.ndarray) -> None:
    planner = ChunkPlanner(workers=1)
    feed = planner.start(long_audio, DEFAULT_VAD)
    assert feed.plan.duration == pytest.approx(long_audio.shape[0] / 16000)
    assert await feed.has(0)
    window = await feed.first_window()
    assert sum(c.shape[0] for c in window) >= 30 * 16000
    plan = await feed.complete()
    assert feed.finished and feed.vad_s > 0
    expected = plan_chunks(long_audio, DEFAULT_VAD)
    assert len(plan.chunks) == len(expected.chunks)
    assert plan.metadata == expected.metadata
    assert plan.speech_timestamps == expected.speech_timestamps
    assert not await feed.has(len(plan.chunks))


@LOOP
async def test_feed_of_silence_ends_empty_and_errors_reach_waiters() -> None:
    planner = ChunkPlanner(workers=2)
    silence = planner.start(np.zeros(16000 * 3, np.float32), DEFAULT_VAD)
    assert not await silence.has(0)
    assert (await silence.complete()).chunks == [] and await silence.first_window() == []
    broken = planner.start(np.zeros((2, 2), np.float32), DEFAULT_VAD)  # not 1-D
    with pytest.raises(Exception):  # noqa: B017 - whatever VAD raised, unchanged
        await broken.complete()


@LOOP
async def test_abandoned_feed_stops_cutting(long_audio: np.ndarray) -> None:
    planner = ChunkPlanner(workers=1)
    first = planner.start(long_audio, DEFAULT_VAD)
    second = planner.start(long_audio, DEFAULT_VAD)  # waits for the one VAD slot
    second.abandon()
    with pytest.raises(FeedStopped):
        await second.complete()
    assert second.count == 0 and len((await first.complete()).chunks) > 4


@LOOP
async def test_streamed_chunks_equal_the_whole_transcript(stack, long_audio: np.ndarray) -> None:
    """Chunks decoded while VAD still runs: streamed (times mapped per chunk) and assembled,
    the transcript is the same."""
    service = stack.service
    options = TranscribeOptions(word_timestamps=True)
    whole = await service.transcribe(long_audio, options)
    prepared = await service.prepare(long_audio, options, Caller())
    streamed = [chunk async for chunk in service.stream_chunks(prepared)]
    segments = [s for chunk in streamed for s in chunk.segments]
    assert [c.index for c in streamed] == list(range(whole.chunks))
    assert [(s.id, s.start, s.end, s.text) for s in segments] == [
        (s.id, s.start, s.end, s.text) for s in whole.segments
    ]
    assert [w for s in segments for w in s.words or []] == whole.words
    assert whole.timings["vad"] > 0


@LOOP
async def test_chunks_decode_while_vad_runs(stack, long_audio: np.ndarray) -> None:
    """The first chunk is sent before the feed is complete."""
    service = stack.service
    prepared = await service.prepare(long_audio, TranscribeOptions(), Caller())
    finished_when_sent: list[bool] = []
    client = service.models["tiny.en"]
    original = client.transcribe_chunk

    async def spy(request):
        finished_when_sent.append(prepared.feed.finished)
        return await original(request)

    client.transcribe_chunk = spy  # type: ignore[method-assign]
    try:
        results = [item async for item in service.run_chunks(prepared)]
    finally:
        del client.transcribe_chunk
    assert len(results) == len(prepared.plan.chunks) > 4
    assert finished_when_sent[0] is False
    await asyncio.sleep(0)


@LOOP
async def test_a_request_counts_as_coming_until_its_vad_is_done(stack, long_audio) -> None:
    """Other requests' chunks may wait for this one's while VAD still cuts it."""
    service = stack.service
    prepared = await service.prepare(long_audio, TranscribeOptions(), Caller())
    key = prepared.options.batch_key()
    assert not prepared.feed.finished and service._coming(key, "tiny.en") == 1
    ended: list[bool] = []
    prepared.feed.on_end(lambda: ended.append(True))
    await prepared.feed.complete()
    assert ended == [True] and service._coming(key, "tiny.en") == 0
    prepared.feed.on_end(lambda: ended.append(True))  # already over: called at once
    assert ended == [True, True]


def test_a_replica_keeps_each_senders_newest_word(replica) -> None:
    """Hints reach a replica in any order: an older "3 more coming" that arrives after the
    newer "nothing more" does not make a batch wait."""
    from serve_app.inference.protocol import ChunkRequest
    from serve_app.options import DecodeOptions

    def chunk(incoming: int, seq: int) -> ChunkRequest:
        return ChunkRequest(
            audio=np.zeros(16000, np.float32),
            offset=0.0,
            duration=1.0,
            options=DecodeOptions(language="en"),
            source="ingress-a",
            incoming=incoming,
            hint_seq=seq,
        )

    key = DecodeOptions(language="en").batch_key()
    newest = chunk(0, 8)
    replica._note_hint(newest, key, time.monotonic())
    replica._note_hint(chunk(3, 5), key, time.monotonic())  # sent earlier, arrived later
    assert replica._more_coming([newest]) is False
    replica._note_hint(chunk(2, 9), key, time.monotonic())
    assert replica._more_coming([newest]) is True
    replica._incoming.clear()
