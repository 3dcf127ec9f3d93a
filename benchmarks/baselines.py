"""What a user would run instead of the service, in this process, on the same clips.

* naive: one `WhisperModel.transcribe` per clip, one at a time (plain faster-whisper).
* ceiling: the service's own batched path with no serving layer — decode, VAD chunks,
  then `WhisperEngine.transcribe_batch` (= `BatchedInferencePipeline.forward`) over all
  chunks in batches of the service's `max_batch_size`, one 30 s window per chunk.
* single-clip latency: direct `WhisperModel.transcribe` and `BatchedInferencePipeline
  .transcribe` on one clip, repeated, for the 1-client latency comparison.
* direct pipeline: `BatchedInferencePipeline.transcribe(path, batch_size=8, beam_size=5)`
  on one (long) recording, generator consumed, for the long-recording shapes.

Baselines must run while the service is idle; every model gets the same `cpu_threads`.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.clips import Clip
from serve_app.inference.engine import WhisperEngine
from serve_app.inference.protocol import ChunkRequest, ReplicaInfo
from serve_app.inference.weights import resolve_weights
from serve_app.options import DecodeOptions
from serve_app.pipeline.chunking import plan_chunks
from serve_app.pipeline.decode import decode_audio
from serve_app.pipeline.service import fit_to_model


@dataclass
class BaselineRun:
    """One pass over the clip set."""

    name: str
    wall_s: float
    audio_s: float
    latencies: list[float] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rtfx(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0


def load_engine(
    model: str, cache_dir: Path, cpu_threads: int = 2, device: str = "cpu"
) -> WhisperEngine:
    """The model the service would load: int8 on CPU (float16 on CUDA), same thread count."""
    path = resolve_weights(f"bundled:{model}", cache_dir)
    compute = "float16" if device == "cuda" else "int8"
    return WhisperEngine(path, device=device, compute_type=compute, cpu_threads=cpu_threads)


def _naive_one(engine: WhisperEngine, clip: Clip, beam_size: int, vad_filter: bool = False) -> str:
    segments, _info = engine.model.transcribe(
        io.BytesIO(clip.data), beam_size=beam_size, vad_filter=vad_filter
    )
    return "".join(s.text for s in segments).strip()


def _pipeline_one(engine: WhisperEngine, clip: Clip, beam_size: int, batch_size: int) -> str:
    segments, _info = engine.pipeline.transcribe(
        io.BytesIO(clip.data), beam_size=beam_size, batch_size=batch_size
    )
    return "".join(s.text for s in segments).strip()


def naive(
    engine: WhisperEngine, clips: list[Clip], beam_size: int = 5, vad_filter: bool = False
) -> BaselineRun:
    """Plain faster-whisper, one request at a time (default options, beam 5)."""
    run = BaselineRun("naive", 0.0, sum(c.duration for c in clips))
    if vad_filter:
        run.extra = {"vad_filter": True}
    started = time.perf_counter()
    for clip in clips:
        t0 = time.perf_counter()
        run.texts[clip.name] = _naive_one(engine, clip, beam_size, vad_filter)
        run.latencies.append(time.perf_counter() - t0)
    run.wall_s = time.perf_counter() - started
    return run


def ceiling(
    engine: WhisperEngine, clips: list[Clip], batch_size: int, beam_size: int = 5
) -> BaselineRun:
    """Batched generate over the same VAD chunks as the service, with no serving layer."""
    run = BaselineRun("ceiling", 0.0, sum(c.duration for c in clips))
    base = DecodeOptions(beam_size=beam_size)
    started = time.perf_counter()
    items: list[tuple[str, ChunkRequest]] = []
    for clip in clips:
        samples = decode_audio(clip.data, max_duration_s=4 * 3600).samples
        plan = plan_chunks(samples)
        language = engine.detect_language(plan.chunks).language if plan.chunks else "en"
        info = ReplicaInfo(
            "ceiling", engine.multilingual, tuple(engine.supported_languages), "", ""
        )
        options = fit_to_model(base.with_language(language), info)
        for chunk, meta in zip(plan.chunks, plan.metadata, strict=True):
            request = ChunkRequest(chunk, meta["offset"], meta["duration"], options)
            items.append((clip.name, request))
    prepared = time.perf_counter()
    sizes: list[int] = []
    parts: dict[str, list[str]] = {clip.name: [] for clip in clips}
    for i in range(0, len(items), batch_size):
        batch = items[i : i + batch_size]
        outputs = engine.transcribe_batch([request for _, request in batch])
        sizes.append(len(batch))
        for (name, _), segments in zip(batch, outputs, strict=True):
            parts[name].extend(s.text for s in segments)
    run.wall_s = time.perf_counter() - started
    run.texts = {name: "".join(texts).strip() for name, texts in parts.items()}
    run.extra = {
        "decode_vad_s": round(prepared - started, 3),
        "generate_s": round(run.wall_s - (prepared - started), 3),
        "chunks": len(items),
        "batch_sizes": sizes,
        "batch_size": batch_size,
    }
    return run


def direct_pipeline(
    engine: WhisperEngine,
    clip: Clip,
    batch_size: int = 8,
    beam_size: int = 5,
    without_timestamps: bool = True,
) -> BaselineRun:
    """`BatchedInferencePipeline.transcribe` on one file: decode, VAD, batched generate.

    Wall time from the call to the last segment of the consumed generator.
    """
    run = BaselineRun("pipeline", 0.0, clip.duration)
    started = time.perf_counter()
    segments, _info = engine.pipeline.transcribe(
        str(clip.path),
        batch_size=batch_size,
        beam_size=beam_size,
        without_timestamps=without_timestamps,
    )
    text = "".join(s.text for s in segments).strip()
    run.wall_s = time.perf_counter() - started
    run.latencies = [run.wall_s]
    run.texts = {clip.name: text}
    run.extra = {"batch_size": batch_size}
    return run


def single_clip_latency(
    engine: WhisperEngine, clip: Clip, reps: int, batch_size: int, beam_size: int = 5
) -> dict[str, list[float]]:
    """Per-call latency of direct faster-whisper on one clip (file bytes in, text out)."""
    out: dict[str, list[float]] = {"naive": [], "pipeline": []}
    _naive_one(engine, clip, beam_size)  # warm both paths once
    _pipeline_one(engine, clip, beam_size, batch_size)
    for _ in range(reps):
        t0 = time.perf_counter()
        _naive_one(engine, clip, beam_size)
        out["naive"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _pipeline_one(engine, clip, beam_size, batch_size)
        out["pipeline"].append(time.perf_counter() - t0)
    return out


def warm_up(engine: WhisperEngine, clip: Clip) -> None:
    """First calls pay one-off costs (allocations, VAD model load); keep them out of timing."""
    _naive_one(engine, clip, 5)
    ceiling(engine, [clip], batch_size=1)
