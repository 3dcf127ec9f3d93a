"""Per model: the baselines in this process, the service at each concurrency level and the
1-client 5 s latency, with throughput relative to the baselines and WER."""

from __future__ import annotations

import asyncio
from typing import Any

import psutil

from benchmarks import baselines, loadgen
from benchmarks.accuracy import wer
from benchmarks.clips import Clip
from benchmarks.cpu import CpuLedger
from benchmarks.options import Options, log
from benchmarks.profile import Profiler
from benchmarks.service import RssSampler, Service, batch_diff


def baseline_entry(run: baselines.BaselineRun) -> dict[str, Any]:
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
    if opts.cpu_threads > 1:
        # A lone clip decodes faster on one thread here (a decoder step splits poorly), and the
        # service runs its batches on fewer threads each: the baseline gets its best count too.
        log(f"{model}: 5 s clip x{opts.latency_reps} on 1 thread")
        engine = baselines.load_engine(model, opts.model_cache, 1, opts.device)
        one = baselines.single_clip_latency(engine, five, opts.latency_reps, batch_size)
        single.update({f"{path}_1t": times for path, times in one.items()})
        del engine
    return {
        "baselines": {"naive": baseline_entry(naive), "ceiling": baseline_entry(ceiling)},
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
    p50 = {path: loadgen.percentile(times, 50) for path, times in base["single"].items()}
    naive_p50, pipeline_p50 = p50["naive"], p50["pipeline"]
    direct = min(x for x in p50.values() if x is not None)
    return {
        "baselines": base["baselines"],
        "baseline_process_rss_mb": base["baseline_process_rss_mb"],
        "levels": levels,
        "latency_5s": {
            "reps": opts.latency_reps,
            "service_p50": _r(service_p50),
            "naive_p50": _r(naive_p50),
            "pipeline_p50": _r(pipeline_p50),
            "naive_1t_p50": _r(p50.get("naive_1t")),
            "pipeline_1t_p50": _r(p50.get("pipeline_1t")),
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


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def batch_size_of(service: Service | None, model: str, default: int) -> int:
    stats = service.stats() if service else None
    try:
        return int(stats[model]["settings"]["max_batch_size"]) if stats else default
    except (KeyError, TypeError, ValueError):
        return default
