"""The engine on the real tiny.en model: mixed-request batches give per-file results."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from faster_whisper import BatchedInferencePipeline

from serve_app.errors import BadRequest
from serve_app.inference.engine import WhisperEngine
from serve_app.inference.protocol import ChunkRequest, ReplicaInfo
from serve_app.inference.weights import resolve_weights
from serve_app.options import DecodeOptions
from serve_app.pipeline.chunking import plan_chunks, restore_timestamps
from serve_app.pipeline.decode import decode_audio
from serve_app.pipeline.service import fit_to_model


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> WhisperEngine:
    path = resolve_weights("bundled:tiny.en", tmp_path_factory.mktemp("cache"))
    return WhisperEngine(path, cpu_threads=2)


def test_one_batch_of_chunks_from_three_files_equals_direct_runs(engine, data_dir):
    pipeline = BatchedInferencePipeline(engine.model)
    options = fit_to_model(DecodeOptions(), _info(engine.multilingual, engine.supported_languages))
    files = ["hello.wav", "story.flac", "numbers.wav"]
    plans, requests = {}, []
    for name in files:
        samples = decode_audio((data_dir / name).read_bytes(), max_duration_s=600).samples
        plans[name] = plan_chunks(samples)
        for i, (chunk, meta) in enumerate(
            zip(plans[name].chunks, plans[name].metadata, strict=True)
        ):
            requests.append(
                ChunkRequest(
                    chunk, meta["offset"], meta["duration"], options, request_id=name, index=i
                )
            )
    outputs = engine.transcribe_batch(requests)  # one batch, chunks of three files
    assert len(outputs) == len(requests) >= 4
    for name in files:
        segments = [
            s for r, out in zip(requests, outputs, strict=True) if r.request_id == name for s in out
        ]
        segments = restore_timestamps(segments, plans[name])
        direct, _ = pipeline.transcribe(str(data_dir / name), batch_size=8)
        direct = list(direct)
        assert "".join(s.text for s in segments) == "".join(s.text for s in direct)
        assert [(s.start, s.end) for s in segments] == [(s.start, s.end) for s in direct]


def test_concurrent_batches_equal_the_same_batches_one_after_another(data_dir, model_cache):
    # Two workers decode at once, each from its own thread; word timings depend on a
    # pipeline's state, so each thread must have its own.
    engine = WhisperEngine(
        resolve_weights("bundled:tiny.en", model_cache), cpu_threads=1, workers=2
    )
    options = replace(
        fit_to_model(DecodeOptions(), _info(False, ["en"])),
        word_timestamps=True,
        without_timestamps=False,
    )
    batches = []
    for name in ("story.flac", "train.wav"):
        samples = decode_audio((data_dir / name).read_bytes(), max_duration_s=600).samples
        plan = plan_chunks(samples)
        batches.append(
            [
                ChunkRequest(chunk, meta["offset"], meta["duration"], options, index=i)
                for i, (chunk, meta) in enumerate(zip(plan.chunks, plan.metadata, strict=True))
            ]
        )
    alone = [engine.transcribe_batch(batch) for batch in batches]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(engine.transcribe_batch, batches))
    assert together == alone
    assert any(s.words for out in alone[1] for s in out)


def test_option_checks(engine):
    with pytest.raises(BadRequest, match="English-only"):
        fit_to_model(DecodeOptions(task="translate"), _info(False, ["en"]))
    with pytest.raises(BadRequest, match="unsupported language"):
        fit_to_model(DecodeOptions(language="xx"), _info(True, ["en", "de"]))
    assert fit_to_model(DecodeOptions(), _info(False, ["en"])).language == "en"
    assert fit_to_model(DecodeOptions(), _info(True, ["en"])).language is None
    assert engine.detect_language([]).language == "en"  # English-only model


def _info(multilingual: bool, languages: list[str]) -> ReplicaInfo:
    return ReplicaInfo("m", multilingual, tuple(languages), "cpu", "int8")
