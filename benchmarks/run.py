"""One invocation: baselines, the service at each concurrency level, shapes of work, jobs;
JSON + MD + PNG.

    python -m benchmarks.run [--quick] [--models tiny.en,base] [--levels 1,4,16,32]
                             [--shapes burst,long,job,mixed]
                             [--url http://127.0.0.1:8000] [--out benchmarks/results]

Without `--url` it starts Ray (2 CPUs) and the app itself on a free loopback port.
Baselines run in this process while the service is idle (before any load).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from benchmarks import baselines, jobs, loadgen, packing, report, shapes
from benchmarks.accuracy import normalise, wer
from benchmarks.clips import (
    DEFAULT_CACHE,
    ENGLISH_FIXTURES,
    Clip,
    build_clip_set,
    five_second_clip,
    generated_clips,
    job_clip,
    long_recording,
    total_audio,
)
from benchmarks.cpu import CpuLedger
from benchmarks.plots import plot, plot_shapes
from benchmarks.profile import Profiler
from benchmarks.service import (
    DEFAULT_APP,
    LOCAL_APP,
    RssSampler,
    Service,
    attach,
    batch_diff,
    bench_config,
    start_local,
)
from benchmarks.targets import targets

RESULTS = Path(__file__).resolve().parent / "results"
MODEL_CACHE = Path("~/.cache/whisper-serve/models").expanduser()
SHAPES = ("burst", "long", "job", "mixed")


@dataclass
class Options:
    quick: bool = False
    models: list[str] = field(default_factory=lambda: ["tiny.en"])
    levels: list[int] = field(default_factory=lambda: [1, 4, 16, 32])
    url: str | None = None
    app_name: str | None = None  # default: "whisper" with --url, else "whisper-bench"
    ray_address: str | None = None
    out: Path = RESULTS
    generated: int = 16
    fixtures: list[str] = field(default_factory=lambda: [*ENGLISH_FIXTURES, "story.flac"])
    clip_dir: Path = DEFAULT_CACHE
    model_cache: Path = MODEL_CACHE
    batch_size: int = 8
    batch_wait_s: float = 0.05
    cpu_threads: int = 2
    device: str = "cpu"  # "cuda" on a GPU box (float16 instead of int8)
    num_gpus: float = 0.0  # GPU share per model replica
    ray_cpus: int = 2
    ingress_nice: int | None = None  # None: AppConfig's default
    latency_reps: int = 15
    per_client: int = 3  # requests per client and level, rounded up to whole clip passes
    job_rate: float = 50.0
    job_seconds: float = 10.0
    drain_clients: int = 10
    drain_jobs: int = 100
    drain_timeout_s: float = 1800.0
    skip_jobs: bool = False
    shapes: list[str] = field(default_factory=lambda: list(SHAPES))
    burst_clips: int = 16  # clips (= clients) per burst
    burst_repeats: int = 5  # bursts per mode (packed, pack=false)
    long_seconds: float = 600.0  # the long recording of the long/job/mixed shapes
    mixed_clients: int = 4
    packing_layouts: int = 6  # random draws of 16 clips for the packing accuracy goal
    profile: list[str] = field(default_factory=list)  # levels (and/or "latency") to py-spy
    command: str = ""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _baseline_entry(run: baselines.BaselineRun) -> dict[str, Any]:
    return {
        "wall_s": round(run.wall_s, 3),
        "audio_s": round(run.audio_s, 3),
        "rtfx": round(run.rtfx, 3),
        "latency_s": loadgen.latency_summary(run.latencies),
        **({"extra": run.extra} if run.extra else {}),
    }


def run_baselines(
    opts: Options, model: str, clips: list[Clip], five: Clip, batch_size: int
) -> dict[str, Any]:
    log(f"{model}: loading for the baselines ({opts.device}, cpu_threads={opts.cpu_threads})")
    engine = baselines.load_engine(model, opts.model_cache, opts.cpu_threads, opts.device)
    baselines.warm_up(engine, clips[0])
    log(f"{model}: naive baseline over {len(clips)} clips")
    naive = baselines.naive(engine, clips)
    log(f"{model}: naive RTFx {naive.rtfx:.2f}; ceiling baseline (batch {batch_size})")
    ceiling = baselines.ceiling(engine, clips, batch_size)
    log(f"{model}: ceiling RTFx {ceiling.rtfx:.2f}; 5 s clip x{opts.latency_reps}")
    single = baselines.single_clip_latency(engine, five, opts.latency_reps, batch_size)
    rss = psutil.Process().memory_info().rss / 2**20
    del engine
    return {
        "baselines": {"naive": _baseline_entry(naive), "ceiling": _baseline_entry(ceiling)},
        "texts": {"naive": naive.texts, "ceiling": ceiling.texts},
        "single": single,
        "baseline_process_rss_mb": round(rss, 1),
    }


def _profiler(opts: Options, service: Service, model: str, label: str) -> Profiler | None:
    if label not in opts.profile:
        return None
    profiler = Profiler(service.app_name, opts.out / "profiles", f"{model}-{label}")
    profiler.start()
    return profiler


def run_level(
    opts: Options,
    service: Service,
    model: str,
    clips: list[Clip],
    concurrency: int,
    base: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, str]]:
    requests = loadgen.requests_for_level(clips, concurrency, opts.per_client)
    before = service.stats()
    profiler = _profiler(opts, service, model, str(concurrency))
    with RssSampler(service.app_name) as rss, CpuLedger() as cpu:
        phase = asyncio.run(loadgen.closed_loop(service.url, requests, concurrency, model))
    profile = profiler.stop() if profiler else None
    after = service.stats()
    ok = [r for r in phase.records if r.ok]
    codes: dict[str, int] = {}
    for r in phase.records:
        codes[str(r.status)] = codes.get(str(r.status), 0) + 1
    naive_rtfx = base["baselines"]["naive"]["rtfx"]
    ceiling_rtfx = base["baselines"]["ceiling"]["rtfx"]
    entry = {
        "concurrency": concurrency,
        "requests": len(phase.records),
        "errors": len(phase.records) - len(ok),
        "status_codes": codes,
        "wall_s": round(phase.wall_s, 3),
        "audio_s": round(phase.ok_audio_s, 3),
        "rtfx": round(phase.rtfx, 3),
        "vs_naive": round(phase.rtfx / naive_rtfx, 3) if naive_rtfx else None,
        "vs_ceiling": round(phase.rtfx / ceiling_rtfx, 3) if ceiling_rtfx else None,
        "latency_s": loadgen.latency_summary([r.latency_s for r in ok]),
        "phases_p50_ms": loadgen.phase_p50(phase.records),
        "timed": loadgen.timed_count(phase.records),
        "batches": batch_diff(before, after, model),
        "rss": rss.result(),
        "cpu": cpu.result(),
        "sample_errors": [r.error for r in phase.records if r.error][:5],
        **({"profile": profile} if profile else {}),
    }
    texts = {r.clip: r.text or "" for r in reversed(ok)}
    log(
        f"{model} c={concurrency}: RTFx {entry['rtfx']:.2f} (naive x{entry['vs_naive']}, "
        f"ceiling x{entry['vs_ceiling']}), p95 {entry['latency_s']['p95']} s, "
        f"batches {entry['batches'].get('histogram')}, errors {entry['errors']}"
    )
    return entry, texts


def run_model(
    opts: Options, service: Service, model: str, clips: list[Clip], five: Clip, base: dict
) -> dict[str, Any]:
    log(f"{model}: warming the service up")
    asyncio.run(loadgen.closed_loop(service.url, [clips[0], five], 1, model))
    levels, texts = [], {}
    for concurrency in opts.levels:
        entry, level_texts = run_level(opts, service, model, clips, concurrency, base)
        levels.append(entry)
        texts.update(level_texts)
    log(f"{model}: 1 client, 5 s clip x{opts.latency_reps}")
    profiler = _profiler(opts, service, model, "latency")
    seq = asyncio.run(loadgen.sequential(service.url, five, opts.latency_reps, model))
    profile = profiler.stop() if profiler else None
    service_p50 = loadgen.percentile([r.latency_s for r in seq.records if r.ok], 50)
    naive_p50 = loadgen.percentile(base["single"]["naive"], 50)
    pipeline_p50 = loadgen.percentile(base["single"]["pipeline"], 50)
    direct = min(x for x in (naive_p50, pipeline_p50) if x is not None)
    return {
        "baselines": base["baselines"],
        "baseline_process_rss_mb": base["baseline_process_rss_mb"],
        "levels": levels,
        "latency_5s": {
            "reps": opts.latency_reps,
            "service_p50": _r(service_p50),
            "naive_p50": _r(naive_p50),
            "pipeline_p50": _r(pipeline_p50),
            "ratio": _r(service_p50 / direct) if service_p50 and direct else None,
            "service_errors": sum(not r.ok for r in seq.records),
            "phases_p50_ms": loadgen.phase_p50(seq.records),
            "timed": loadgen.timed_count(seq.records),
            **({"profile": profile} if profile else {}),
        },
        "wer": {
            "naive": wer(base["texts"]["naive"], clips),
            "ceiling": wer(base["texts"]["ceiling"], clips),
            "service": wer(texts, clips),
        },
        "service_equals_ceiling": sum(
            texts.get(c.name) == base["texts"]["ceiling"].get(c.name) for c in clips
        ),
    }


def run_jobs(opts: Options, service: Service, model: str, clip: Clip) -> dict[str, Any]:
    if opts.skip_jobs:
        return {"submit": {"skipped": "--skip-jobs"}, "drain": {"skipped": "--skip-jobs"}}
    if not asyncio.run(jobs.probe(service.url)):
        log("jobs API not available: skipping the job sections")
        return {"submit": dict(jobs.SKIPPED), "drain": dict(jobs.SKIPPED)}
    log(f"jobs: submitting at {opts.job_rate} req/s for {opts.job_seconds} s")
    submit, ids = asyncio.run(
        jobs.submit_at_rate(service.url, clip, model, opts.job_rate, opts.job_seconds)
    )
    log(f"jobs: submit p99 {submit['latency_s']['p99']} s; cancelling the backlog")
    submit["cancel_status_codes"] = asyncio.run(jobs.cancel_all(service.url, ids))
    state = asyncio.run(jobs.wait_terminal(service.url, ids, timeout_s=300))
    submit["outcomes"] = jobs._outcomes(state)
    total = opts.drain_clients * opts.drain_jobs
    log(f"jobs: drain {opts.drain_clients} clients x {opts.drain_jobs} jobs = {total}")
    drain = asyncio.run(
        jobs.drain(
            service.url, clip, model, opts.drain_clients, opts.drain_jobs, opts.drain_timeout_s
        )
    )
    log(f"jobs: drain outcomes {drain['outcomes']} in {drain['drain_s']} s")
    return {"model": model, "clip_s": clip.duration, "submit": submit, "drain": drain}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _batch_size_of(service: Service | None, model: str, default: int) -> int:
    stats = service.stats() if service else None
    try:
        return int(stats[model]["settings"]["max_batch_size"]) if stats else default
    except (KeyError, TypeError, ValueError):
        return default


def run_packing(opts: Options, batch_size: int) -> dict[str, Any]:
    """Packed vs one-window-per-clip on short generated clips, while the service is idle."""
    model = opts.models[0]
    log(f"window packing comparison ({model})")
    engine = baselines.load_engine(model, opts.model_cache, opts.cpu_threads, opts.device)
    count = 8 if opts.quick else 16
    result = packing.compare(
        engine,
        generated_clips(count, opts.clip_dir),
        batch_size=batch_size,
        repeats=1 if opts.quick else 2,
    )
    result["model"] = model
    if opts.packing_layouts:
        log(f"window packing: {opts.packing_layouts} random layouts of 16 clips")
        result["layouts"] = packing.layouts(
            engine, 16, opts.packing_layouts, batch_size, opts.clip_dir
        )
    return result


def _burst_clips(opts: Options) -> list[Clip]:
    return generated_clips(opts.burst_clips, opts.clip_dir)


def _needs_long(opts: Options) -> bool:
    return any(s in opts.shapes for s in ("long", "job", "mixed"))


def _entry_with_wer(run: baselines.BaselineRun, clips: list[Clip]) -> dict[str, Any]:
    return {**_baseline_entry(run), "wer": wer(run.texts, clips)}


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


def run_benchmark(opts: Options) -> dict[str, Any]:
    """Everything in one go; writes latest.json/.md/.png under `opts.out` and returns results."""
    started = time.time()
    loadavg_start = [round(x, 2) for x in os.getloadavg()]
    clips = build_clip_set(opts.generated, opts.fixtures, opts.clip_dir)
    five, jclip = five_second_clip(opts.clip_dir), job_clip(opts.clip_dir)
    bursts = _burst_clips(opts) if "burst" in opts.shapes else []
    long = long_recording(opts.clip_dir, opts.long_seconds) if _needs_long(opts) else None
    log(f"{len(clips)} clips, {total_audio(clips):.1f} s audio; load average {loadavg_start}")
    app_name = opts.app_name or (DEFAULT_APP if opts.url else LOCAL_APP)
    service = attach(opts.url, app_name, opts.ray_address) if opts.url else None
    sizes = {m: _batch_size_of(service, m, opts.batch_size) for m in opts.models}
    base = {m: run_baselines(opts, m, clips, five, sizes[m]) for m in opts.models}
    packed = run_packing(opts, sizes[opts.models[0]])
    shape_base = run_shape_baselines(opts, five, bursts, long, sizes[opts.models[0]])
    if service is None:
        log("starting Ray (2 CPUs) and the app")
        config = bench_config(
            opts.models,
            opts.batch_size,
            opts.batch_wait_s,
            opts.cpu_threads,
            opts.model_cache,
            opts.device,
            opts.num_gpus,
        )
        if opts.ingress_nice is not None:
            config["ingress"]["nice"] = opts.ingress_nice
            config.setdefault("jobs", {})["tracker_nice"] = opts.ingress_nice
        gpus = 1 if opts.num_gpus else 0
        service = start_local(config, app_name, opts.ray_cpus, gpus)
    results: dict[str, Any] = {"models": {}, "shapes": {}, "jobs": {}, "packing": packed}
    try:
        for model in opts.models:
            results["models"][model] = run_model(opts, service, model, clips, five, base[model])
        if opts.shapes:
            results["shapes"] = run_shapes(opts, service, five, bursts, long, shape_base)
        results["jobs"] = run_jobs(opts, service, opts.models[0], jclip)
    finally:
        service.stop()
    results["meta"] = {
        "command": opts.command,
        "mode": "quick" if opts.quick else "full",
        "started": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "wall_s": round(time.time() - started, 1),
        "host": {
            "cpus": os.cpu_count(),
            "loadavg_start": loadavg_start,
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        },
        "service": f"{service.url} ({'started here' if service.started_here else 'attached'})",
        "models": opts.models,
        "levels": opts.levels,
        "shapes": opts.shapes,
        "cpu_threads": opts.cpu_threads,
        "device": opts.device,
        "num_gpus": opts.num_gpus,
        "batch_size": sizes,
        "clip_count": len(clips),
        "clip_audio_s": round(total_audio(clips), 3),
        "clips": [{"name": c.name, "duration": c.duration} for c in clips],
    }
    results["targets"] = targets(results)
    write_outputs(results, opts.out)
    return results


def write_outputs(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    keys = ("meta", "models", "shapes", "jobs", "packing", "targets")
    ordered = {k: results[k] for k in keys if k in results}
    (out / "latest.json").write_text(json.dumps(ordered, indent=2) + "\n")
    text = report.markdown(ordered)
    if ordered.get("packing"):
        text += (
            "\n\n## Window packing (no serving layer)\n\n"
            + packing.markdown(ordered["packing"])
            + "\n"
        )
        if ordered["packing"].get("layouts"):
            text += packing.layouts_markdown(ordered["packing"]["layouts"]) + "\n"
    (out / "latest.md").write_text(text)
    plot(ordered, out / "latest.png")
    plot_shapes(ordered, out / "latest-shapes.png")
    print(text)


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="< 3 min: few clips, levels 1,4")
    p.add_argument("--models", help="comma-separated model names (default tiny.en)")
    p.add_argument("--levels", help="comma-separated client counts (default 1,4,16,32)")
    p.add_argument("--url", help="benchmark a running service instead of starting one")
    p.add_argument("--app-name", help=f"Serve app name (default {DEFAULT_APP} with --url)")
    p.add_argument("--ray-address", help="with --url: join this Ray cluster to read stats()")
    p.add_argument("--out", type=Path, default=RESULTS, help="directory for latest.*")
    p.add_argument("--clips", type=int, help="number of generated espeak-ng clips")
    p.add_argument("--fixtures", help="comma-separated tests/data files, or 'none'")
    p.add_argument("--clip-dir", type=Path, default=DEFAULT_CACHE, help="generated clip cache")
    p.add_argument("--model-cache", type=Path, default=MODEL_CACHE)
    p.add_argument("--batch-size", type=int, default=8, help="max_batch_size (service+ceiling)")
    p.add_argument("--batch-wait", type=float, default=0.05, help="batch_wait_timeout_s")
    p.add_argument("--cpu-threads", type=int, default=2, help="CTranslate2 threads, everywhere")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: float16")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPU share per model replica")
    p.add_argument("--ray-cpus", type=int, default=2, help="num_cpus for a local ray.init")
    p.add_argument(
        "--ingress-nice", type=int, help="ingress.nice and jobs.tracker_nice (default: AppConfig's)"
    )
    p.add_argument("--latency-reps", type=int, help="repetitions of the 5 s clip")
    p.add_argument("--per-client", type=int, help="requests per client per level (min)")
    p.add_argument("--job-rate", type=float, default=50.0, help="job submits per second")
    p.add_argument("--job-seconds", type=float, help="how long to submit at --job-rate")
    p.add_argument("--drain-clients", type=int, help="clients in the job drain")
    p.add_argument("--drain-jobs", type=int, help="jobs per drain client")
    p.add_argument("--drain-timeout", type=float, default=1800.0)
    p.add_argument("--skip-jobs", action="store_true")
    p.add_argument(
        "--shapes",
        help="comma list from burst,long,job,mixed, or 'none' "
        "(default all; --quick: burst,long with small sizes)",
    )
    p.add_argument("--burst-clips", type=int, help="clips (= clients) per burst (16)")
    p.add_argument("--burst-repeats", type=int, help="bursts per mode (5)")
    p.add_argument("--long-seconds", type=float, help="length of the long recording (600)")
    p.add_argument("--mixed-clients", type=int, help="interactive clients in mixed (4)")
    p.add_argument("--packing-layouts", type=int, help="random packing layouts (6)")
    p.add_argument("--profile", default="", help="py-spy these levels, e.g. '16,latency'")
    a = p.parse_args(argv)
    opts = Options(quick=a.quick, url=a.url, app_name=a.app_name, ray_address=a.ray_address)
    if a.quick:
        opts.levels, opts.generated, opts.latency_reps, opts.per_client = [1, 4], 6, 5, 2
        opts.fixtures = ["hello.wav", "weather.wav"]
        opts.job_seconds, opts.drain_clients, opts.drain_jobs = 1.0, 2, 5
        opts.shapes, opts.burst_clips, opts.burst_repeats = ["burst", "long"], 4, 2
        opts.long_seconds, opts.packing_layouts = 60.0, 0
    if a.models:
        opts.models = [m.strip() for m in a.models.split(",") if m.strip()]
    if a.levels:
        opts.levels = [int(x) for x in a.levels.split(",")]
    if a.clips is not None:
        opts.generated = a.clips
    if a.fixtures is not None:
        opts.fixtures = [] if a.fixtures == "none" else a.fixtures.split(",")
    if a.shapes is not None:
        opts.shapes = [x.strip() for x in a.shapes.split(",") if x.strip() and x != "none"]
        unknown = set(opts.shapes) - set(SHAPES)
        if unknown:
            p.error(f"--shapes: unknown {sorted(unknown)}; choose from {','.join(SHAPES)}")
    overrides = (
        "latency_reps",
        "per_client",
        "job_seconds",
        "drain_clients",
        "drain_jobs",
        "burst_clips",
        "burst_repeats",
        "long_seconds",
        "mixed_clients",
        "packing_layouts",
    )
    for name in overrides:
        if getattr(a, name) is not None:
            setattr(opts, name, getattr(a, name))
    opts.out, opts.clip_dir, opts.model_cache = a.out, a.clip_dir, a.model_cache
    opts.batch_size, opts.batch_wait_s, opts.cpu_threads = a.batch_size, a.batch_wait, a.cpu_threads
    opts.device, opts.num_gpus, opts.ray_cpus = a.device, a.num_gpus, a.ray_cpus
    opts.ingress_nice = a.ingress_nice
    opts.job_rate, opts.drain_timeout_s, opts.skip_jobs = a.job_rate, a.drain_timeout, a.skip_jobs
    opts.profile = [x.strip() for x in a.profile.split(",") if x.strip()]
    opts.command = shlex.join(["python", "-m", "benchmarks.run", *(argv or sys.argv[1:])])
    return opts


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run_benchmark(parse_args(argv))


if __name__ == "__main__":
    main()
