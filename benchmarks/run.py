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
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import baselines, jobs, packing, report
from benchmarks.clips import (
    DEFAULT_CACHE,
    Clip,
    build_clip_set,
    five_second_clip,
    generated_clips,
    job_clip,
    long_recording,
    total_audio,
)
from benchmarks.levels import batch_size_of, run_baselines, run_model
from benchmarks.options import MODEL_CACHE, RESULTS, SHAPES, Options, log
from benchmarks.plots import plot, plot_shapes
from benchmarks.service import (
    DEFAULT_APP,
    LOCAL_APP,
    Service,
    attach,
    bench_config,
    set_model_nice,
    start_local,
)
from benchmarks.shape_runs import burst_clips, needs_long, run_shape_baselines, run_shapes
from benchmarks.targets import targets


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


def run_benchmark(opts: Options) -> dict[str, Any]:
    """Everything in one go; writes latest.json/.md/.png under `opts.out` and returns results."""
    started = time.time()
    loadavg_start = [round(x, 2) for x in os.getloadavg()]
    clips = build_clip_set(opts.generated, opts.fixtures, opts.clip_dir)
    five, jclip = five_second_clip(opts.clip_dir), job_clip(opts.clip_dir)
    bursts = burst_clips(opts) if "burst" in opts.shapes else []
    long = long_recording(opts.clip_dir, opts.long_seconds) if needs_long(opts) else None
    log(f"{len(clips)} clips, {total_audio(clips):.1f} s audio; load average {loadavg_start}")
    app_name = opts.app_name or (DEFAULT_APP if opts.url else LOCAL_APP)
    service = attach(opts.url, app_name, opts.ray_address) if opts.url else None
    sizes = {m: batch_size_of(service, m, opts.batch_size) for m in opts.models}
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
            opts.concurrent_batches,
            opts.busy_batch,
        )
        if opts.ingress_nice is not None:
            config["ingress"]["nice"] = opts.ingress_nice
        if opts.model_nice is not None:
            set_model_nice(config, opts.model_nice)
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
        "concurrent_batches": opts.concurrent_batches,
        "busy_background_batch_size": opts.busy_batch,
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
    p.add_argument(
        "--concurrent-batches",
        type=int,
        default=2,
        help="batches a service replica runs at once, sharing --cpu-threads (serve_config.yaml)",
    )
    p.add_argument(
        "--busy-batch",
        type=int,
        help="busy_background_batch_size (default: BatchSettings', as serve_config.yaml)",
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: float16")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPU share per model replica")
    p.add_argument("--ray-cpus", type=int, default=2, help="num_cpus for a local ray.init")
    p.add_argument("--ingress-nice", type=int, help="ingress.nice (default: AppConfig's)")
    p.add_argument(
        "--model-nice",
        type=int,
        help="models[].nice, speaker_embedder.nice and jobs.tracker_nice (default: AppConfig's)",
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
    opts.concurrent_batches, opts.busy_batch = a.concurrent_batches, a.busy_batch
    opts.device, opts.num_gpus, opts.ray_cpus = a.device, a.num_gpus, a.ray_cpus
    opts.ingress_nice, opts.model_nice = a.ingress_nice, a.model_nice
    opts.job_rate, opts.drain_timeout_s, opts.skip_jobs = a.job_rate, a.drain_timeout, a.skip_jobs
    opts.profile = [x.strip() for x in a.profile.split(",") if x.strip()]
    opts.command = shlex.join(["python", "-m", "benchmarks.run", *(argv or sys.argv[1:])])
    return opts


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run_benchmark(parse_args(argv))


if __name__ == "__main__":
    main()
