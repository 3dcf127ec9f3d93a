"""The shapes of work in a run: their baselines in this process (before the service), then
bursts, the long recording (sync, job) and mixed load against the service."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from benchmarks import baselines, jobs, shapes
from benchmarks.accuracy import normalise, wer
from benchmarks.clips import Clip, generated_clips
from benchmarks.cpu import CpuLedger
from benchmarks.levels import baseline_entry
from benchmarks.options import Options, log
from benchmarks.service import Service


def burst_clips(opts: Options) -> list[Clip]:
    return generated_clips(opts.burst_clips, opts.clip_dir)


def needs_long(opts: Options) -> bool:
    return any(s in opts.shapes for s in ("long", "job", "mixed"))


def _entry_with_wer(run: baselines.BaselineRun, clips: list[Clip]) -> dict[str, Any]:
    return {**baseline_entry(run), "wer": wer(run.texts, clips)}


def run_shape_baselines(
    opts: Options, five: Clip, bursts: list[Clip], long: Clip | None, batch_size: int
) -> dict[str, Any]:
    """The shapes' baselines, in this process, before the service (first model only)."""
    if not opts.shapes:
        return {}
    model = opts.models[0]
    engine = baselines.load_engine(model, opts.model_cache, opts.cpu_threads, opts.device)
    baselines.warm_up(engine, five)
    baselines.direct_pipeline(engine, five, batch_size)  # warm the pipeline path too
    out: dict[str, Any] = {}
    texts: dict[str, dict[str, str]] = {}
    if "burst" in opts.shapes:
        with CpuLedger() as cpu:
            runs = [
                baselines.ceiling(engine, bursts, batch_size) for _ in range(1 if opts.quick else 2)
            ]
        best = min(runs, key=lambda r: r.wall_s)
        out["burst_ceiling"] = {
            **_entry_with_wer(best, bursts),
            "cpu": cpu.result(),
            "walls_s": [round(r.wall_s, 3) for r in runs],
            "clips": len(bursts),
        }
        texts["burst_ceiling"] = best.texts
        log(f"shapes: ceiling over the {len(bursts)} burst clips {best.wall_s:.2f} s")
    if long is not None:
        log(f"shapes: direct BatchedInferencePipeline on {long.name} ({long.duration:.0f} s)")
        with CpuLedger() as cpu:
            run = baselines.direct_pipeline(engine, long, batch_size)
        out["long_pipeline"] = {**_entry_with_wer(run, [long]), "cpu": cpu.result()}
        log(f"shapes: direct pipeline {run.wall_s:.1f} s")
        if "job" in opts.shapes:
            run = baselines.direct_pipeline(engine, long, batch_size, without_timestamps=False)
            out["long_pipeline_timestamps"] = _entry_with_wer(run, [long])
            log(f"shapes: direct pipeline with timestamps {run.wall_s:.1f} s")
        if "long" in opts.shapes or "job" in opts.shapes:
            run = baselines.naive(engine, [long], vad_filter=True)
            out["long_naive_vad"] = _entry_with_wer(run, [long])
            log(f"shapes: naive WhisperModel.transcribe(vad_filter=True) {run.wall_s:.1f} s")
    del engine
    return {"baselines": out, "texts": texts}


def _shape(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one shape; a failure is recorded in its entry instead of ending the run."""
    with CpuLedger() as cpu:
        try:
            entry = dict(fn())
        except Exception as exc:  # a benchmark reports, it does not crash on one shape
            log(f"shapes: {name} failed: {type(exc).__name__}: {exc}")
            entry = {"error": f"{type(exc).__name__}: {exc}"}
    entry["cpu"] = cpu.result()
    return entry


def _long_wer(long: Clip, text: str | None, wall_s: float | None) -> float | None:
    """WER of a transcript of the long recording; None when the work did not succeed."""
    return wer({long.name: text or ""}, [long]) if wall_s is not None else None


def run_shapes(
    opts: Options,
    service: Service,
    five: Clip,
    bursts: list[Clip],
    long: Clip | None,
    base: dict[str, Any],
) -> dict[str, Any]:
    """Bursts, the long recording (sync, job), mixed load: against the service, in that order."""
    model = opts.models[0]
    out: dict[str, Any] = {
        "model": model,
        "selected": list(opts.shapes),
        "baselines": base.get("baselines", {}),
    }
    if long is not None:
        words = len(normalise(long.reference).split())
        out["recording"] = {"name": long.name, "audio_s": long.duration, "words": words}
    if "burst" in opts.shapes:
        n, reps = len(bursts), opts.burst_repeats
        log(f"shapes: bursts of {n} clips x{reps} per mode (packed, pack=false)")
        burst = _shape("burst", lambda: asyncio.run(shapes.burst(service.url, bursts, model, reps)))
        ceiling_texts = base.get("texts", {}).get("burst_ceiling", {})
        for mode, entry in (burst.get("modes") or {}).items():
            texts = entry.pop("texts")
            entry["wer"] = wer(texts, bursts)
            entry["identical_to_ceiling"] = sum(
                c.name in texts and texts[c.name] == ceiling_texts.get(c.name) for c in bursts
            )
            log(
                f"shapes: burst {mode}: walls {[r['wall_s'] for r in entry['runs']]}, "
                f"errors {entry['errors']}"
            )
        out["burst"] = burst
    if long is not None and "long" in opts.shapes:
        log(f"shapes: {long.name} as one sync request")
        entry = _shape("long", lambda: asyncio.run(shapes.long_sync(service.url, long, model)))
        entry["wer"] = _long_wer(long, entry.pop("text", None), entry.get("wall_s"))
        log(f"shapes: long sync {entry.get('wall_s')} s, status {entry.get('status')}")
        out["long"] = entry
    if long is not None and ("job" in opts.shapes or "mixed" in opts.shapes):
        if not asyncio.run(jobs.probe(service.url)):
            out.update({k: dict(jobs.SKIPPED) for k in ("job", "mixed") if k in opts.shapes})
            return out
        index = random.randrange((1 << 16) - 1)  # unique audio: the service dedupes jobs
        if "job" in opts.shapes:
            log(f"shapes: {long.name} as one job (poll every {shapes.POLL_S} s)")
            job = _shape(
                "job", lambda: asyncio.run(shapes.long_job(service.url, long, model, index))
            )
            job["wer"] = _long_wer(long, job.pop("text", None), job.get("wall_s"))
            log(f"shapes: long job {job.get('wall_s')} s, status {job.get('status')}")
            out["job"] = job
            log(f"shapes: {long.name} as one job with the job API's default timestamps")
            stamped = _shape(
                "job_timestamps",
                lambda: asyncio.run(shapes.long_job(service.url, long, model, index + 2, True)),
            )
            stamped["wer"] = _long_wer(long, stamped.pop("text", None), stamped.get("wall_s"))
            log(f"shapes: long job with timestamps {stamped.get('wall_s')} s")
            out["job_timestamps"] = stamped
        if "mixed" in opts.shapes:
            clients = opts.mixed_clients
            log(f"shapes: mixed: {long.name} job + {clients} clients of {five.name}")
            mixed = _shape(
                "mixed",
                lambda: asyncio.run(
                    shapes.mixed(service.url, long, five, model, clients, index + 1)
                ),
            )
            if "job" in mixed:
                text, wall = mixed.pop("job_text", None), mixed["job"].get("wall_s")
                mixed["job"]["wer"] = _long_wer(long, text, wall)
            inter = (mixed.get("interactive") or {}).get("latency_s") or {}
            job_wall = (mixed.get("job") or {}).get("wall_s")
            log(f"shapes: mixed: interactive p50 {inter.get('p50')} s, job wall {job_wall} s")
            out["mixed"] = mixed
    return out
