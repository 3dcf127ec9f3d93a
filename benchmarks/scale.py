"""Jobs at the seeds' scale, with fair share across tenants (issue 18), in one run:

- **seeds**: `--tenants` (10) tenants x `--jobs-per-tenant` (100) short jobs, submitted
  open loop at `--rate` (50/s, i.e. within 20 s), round-robin over the tenants, each tenant
  with its own API key; drain time, jobs/s and audio-seconds/s against naive sequential
  faster-whisper on the same audio; lost, failed and duplicated jobs (all must be 0).
- **flood**: tenant A submits `--flood` (500) jobs, then B and C `--flood-small` (10)
  each; B's and C's completion times against the same 10 + 10 on an idle system.
- **submit**: `POST /v1/jobs` p50/p95/p99 at `--rate` for `--submit-seconds` (10) on
  an idle service (the backlog is cancelled), next to the same figures during the seeds'
  scenario, when the submitted jobs are being transcribed on the same cores.

    python -m benchmarks.scale [--quick] [--out benchmarks/results]

It starts Ray (2 CPUs) and the app with auth on (keys created in its SQLite job store), or
deploys the app into a Ray that is already running (`--http-url` of its Serve proxy, the
CI smoke test). Naive faster-whisper runs in this process before the service starts, on
`--naive-sample` of the jobs' unique clips; the 1,000-job figure is that rate times the
jobs' audio (the clips differ only in their last samples). Results: `scale.json`,
`scale.md` in `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks import baselines, scale_report
from benchmarks.clips import DEFAULT_CACHE, Clip, job_clip, unique_wav
from benchmarks.scale_load import (
    Bench,
    completion,
    outcomes,
    submit_open_loop,
    submit_summary,
    tracker_stats,
    wait_tenants,
)
from benchmarks.serve_floor import deploy_floor, floor_probe, tracker_paused
from benchmarks.service import bench_config, free_port, wait_ready

RESULTS = Path(__file__).resolve().parent / "results"
MODEL_CACHE = Path("~/.cache/whisper-serve/models").expanduser()


@dataclass(frozen=True)
class Options:
    quick: bool = False
    tenants: int = 10
    jobs_per_tenant: int = 100
    rate: float = 50.0
    flood: int = 500
    flood_small: int = 10
    submit_seconds: float = 10.0
    naive_sample: int = 40
    max_concurrent_jobs: int = 4
    timeout_s: float = 1800.0
    http_url: str | None = None
    fifo_flood: bool = False
    out: Path = RESULTS
    clip_dir: Path = DEFAULT_CACHE
    model_cache: Path = MODEL_CACHE
    command: str = ""


def log(message: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def scenario(
    bench: Bench,
    groups: list[tuple[list[str], int]],
    rate: float,
    timeout_s: float,
    while_draining: Callable[[], Awaitable[Any]] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], datetime, float]:
    """Submit each group (tenants, total) one after the other, then drain everything
    (running `while_draining` first, with the backlog being transcribed)."""
    t0_wall, t0 = datetime.now(UTC), time.perf_counter()
    submitted: list[dict[str, Any]] = []
    for tenants, total in groups:
        submitted += await submit_open_loop(bench, tenants, total, rate, t0)
    if while_draining is not None:
        await while_draining()
    seen = await wait_tenants(bench, submitted, timeout_s)
    return submitted, seen, t0_wall, time.perf_counter() - t0


def run_all(
    opts: Options, bench: Bench, config: Any, naive: dict[str, Any], floor_url: str
) -> dict[str, Any]:
    results: dict[str, Any] = {"naive": naive}
    run = f"r{uuid.uuid4().hex[:4]}"  # tenants of this run only

    log(f"idle reference: B and C submit {opts.flood_small} jobs each")
    small = [f"{run}-B", f"{run}-C"]
    sub, seen, t0w, wall = asyncio.run(
        scenario(bench, [(small, 2 * opts.flood_small)], opts.rate, opts.timeout_s)
    )
    results["idle"] = {"completion": completion(sub, seen, t0w), "wall_s": round(wall, 2)}

    total = opts.tenants * opts.jobs_per_tenant
    n_submit = max(1, round(opts.rate * opts.submit_seconds))
    floor: dict[str, Any] = {}

    async def floor_while_busy() -> None:
        log(f"Serve floor: a no-op submit endpoint at {opts.rate}/s during the drain")
        floor["busy"] = await floor_probe(bench, floor_url, f"{run}-F", n_submit, opts.rate)

    log(f"seeds: {opts.tenants} tenants x {opts.jobs_per_tenant} jobs at {opts.rate}/s")
    tenants = [f"{run}-t{n:02d}" for n in range(opts.tenants)]
    before = tracker_stats(config)
    sub, seen, t0w, wall = asyncio.run(
        scenario(bench, [(tenants, total)], opts.rate, opts.timeout_s, floor_while_busy)
    )
    after = tracker_stats(config)
    dup = {
        "duplicate_checkpoints": after.get("duplicate_checkpoints", 0)
        - before.get("duplicate_checkpoints", 0)
    }
    done = outcomes(sub, seen, dup)
    audio_s = done["succeeded"] * bench.clip.duration
    per_tenant = completion(sub, seen, t0w)
    # The rows' finish times, not the poll that saw them (polls are 2 s apart).
    if not (done["unfinished"] or done["lost"]):
        wall = max((c["last_done_s"] or wall for c in per_tenant.values()), default=wall)
    results["seeds"] = {
        "tenants": opts.tenants,
        "jobs": total,
        "submitted_in_s": round(max(r["at_s"] for r in sub), 2),
        "submit": submit_summary(sub),
        "outcomes": done,
        "drain_s": round(wall, 2),
        "jobs_per_s": round(done["succeeded"] / wall, 3),
        "audio_s_per_s": round(audio_s / wall, 3),
        "naive_s": round(naive["per_job_s"] * total, 1),
        "vs_naive": round(naive["per_job_s"] * total / wall, 3),
        "completion": per_tenant,
    }
    log(f"seeds: {done} in {wall:.1f} s")

    results["flood"] = flood_phase(opts, bench, run, results["idle"]["completion"])

    log(f"Serve floor and submit: {opts.rate}/s for {opts.submit_seconds} s, idle service")
    floor["idle"] = asyncio.run(floor_probe(bench, floor_url, f"{run}-F", n_submit, opts.rate))
    sub = asyncio.run(submit_open_loop(bench, [f"{run}-S"], n_submit, opts.rate))
    results["submit"] = {"idle": submit_summary(sub), "rate": opts.rate, "floor": floor}
    with tracker_paused(config) as paused:
        if paused:
            log("submit with the tracker paused: durable submits, no job running")
            held = asyncio.run(submit_open_loop(bench, [f"{run}-P"], n_submit, opts.rate))
            results["submit"]["tracker_paused"] = submit_summary(held)
            sub += held
    results["submit"]["cancel"] = asyncio.run(cancel_submitted(bench, sub))
    results["tracker"] = tracker_stats(config)
    return results


def flood_phase(
    opts: Options, bench: Bench, run: str, idle: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """A submits `opts.flood`, then B and C `opts.flood_small` each; B, C against `idle`."""
    log(f"flood: A submits {opts.flood}, then B and C {opts.flood_small} each")
    a, b, c = f"{run}-A", f"{run}-fB", f"{run}-fC"
    groups = [([a], opts.flood), ([b, c], 2 * opts.flood_small)]
    sub, seen, t0w, wall = asyncio.run(scenario(bench, groups, opts.rate, opts.timeout_s))
    flood = completion(sub, seen, t0w)
    references = list(idle.values())
    return {
        "outcomes": outcomes(sub, seen, {}),
        "wall_s": round(wall, 2),
        "completion": flood,
        "vs_idle": {
            name: _ratio(flood[t]["completion_s"], ref["completion_s"])
            for name, t, ref in zip(("B", "C"), (b, c), references, strict=False)
        },
    }


async def cancel_submitted(bench: Bench, submitted: list[dict[str, Any]]) -> dict[str, int]:
    """DELETE every accepted job of `submitted`, each with its tenant's key; status counts."""
    # benchmarks.jobs.cancel_all sends no key; with auth on, each tenant cancels its own.
    codes: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=bench.url, timeout=60) as client:
        for record in submitted:
            if not record["id"]:
                continue
            headers = {"authorization": f"Bearer {bench.key(record['tenant'])}"}
            response = await client.delete(f"/v1/jobs/{record['id']}", headers=headers)
            codes[str(response.status_code)] = codes.get(str(response.status_code), 0) + 1
    return codes


def _ratio(num: float | None, den: float | None) -> float | None:
    return round(num / den, 2) if num is not None and den else None


def naive_baseline(opts: Options, clip: Clip) -> dict[str, Any]:
    """Plain faster-whisper, one job's audio after another, on a sample of the jobs' clips."""
    engine = baselines.load_engine("tiny.en", opts.model_cache, cpu_threads=2)
    baselines.warm_up(engine, clip)
    sample = [replace(clip, data=unique_wav(clip.data, i)) for i in range(opts.naive_sample)]
    run = baselines.naive(engine, sample)
    del engine
    return {
        "sample": len(sample),
        "wall_s": round(run.wall_s, 3),
        "per_job_s": round(run.wall_s / len(sample), 4),
        "audio_s_per_s": round(run.rtfx, 3),
        "clip_s": round(clip.duration, 3),
    }


def app_config(opts: Options, name: str, fair_share: bool = True) -> Any:
    from serve_app.config import AppConfig

    raw = bench_config(["tiny.en"], 8, 0.05, 2, opts.model_cache)
    raw["auth"] = {"enabled": True}
    raw["jobs"] = {
        "tracker_name": f"tracker-{name}",
        "max_concurrent_jobs": opts.max_concurrent_jobs,
        "metrics_max_tenants": opts.tenants + 4,
        "fair_share": fair_share,
    }
    return AppConfig.model_validate(raw)


def deploy(http_url: str | None, name: str, config: Any) -> tuple[str, str, bool]:
    """Serve the app (starting Ray and Serve unless `http_url` says they run): its URL, the
    proxy's URL and whether Ray was started here."""
    import ray
    from ray import serve

    from serve_app.app import build_app

    started = http_url is None and not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    base = http_url
    if base is None:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        base = f"http://127.0.0.1:{port}"
    serve.run(build_app(config), name=name, route_prefix=f"/{name}")
    url = f"{base.rstrip('/')}/{name}"
    wait_ready(url)
    return url, base, started


def run(opts: Options) -> dict[str, Any]:
    clip = job_clip(opts.clip_dir)
    log(f"naive faster-whisper on {opts.naive_sample} copies of the {clip.duration:.1f} s clip")
    naive = naive_baseline(opts, clip)
    name = f"scale-{uuid.uuid4().hex[:6]}"
    config = app_config(opts, name)
    load = os.getloadavg()
    started_at = datetime.now(UTC)
    url, base, started = deploy(opts.http_url, name, config)
    apps = [(name, config)]
    floor_name = f"{name}-floor"
    try:
        floor_url = deploy_floor(base, floor_name)
        bench = Bench(url, config.storage.database_url, clip)
        results = run_all(opts, bench, config, naive, floor_url)
        if opts.fifo_flood:
            fifo_name = f"{name}-fifo"
            fifo = app_config(opts, fifo_name, fair_share=False)
            apps.append((fifo_name, fifo))
            log("the flood again with jobs.fair_share off (priority, then FIFO)")
            fifo_url, _, _ = deploy(base, fifo_name, fifo)
            fifo_bench = Bench(fifo_url, fifo.storage.database_url, clip)
            run_id = f"fifo{uuid.uuid4().hex[:4]}"
            results["flood_fifo"] = flood_phase(
                opts, fifo_bench, run_id, results["idle"]["completion"]
            )
    finally:
        _teardown(apps, started)
    results["meta"] = {
        "command": opts.command,
        "started_at": started_at.isoformat(timespec="seconds"),
        "took_s": round((datetime.now(UTC) - started_at).total_seconds(), 1),
        "load_average": [round(x, 2) for x in load],
        "cpus": os.cpu_count(),
        "quick": opts.quick,
        "clip_s": round(clip.duration, 3),
        "max_concurrent_jobs": opts.max_concurrent_jobs,
        "storage": "SQLite + local folder (the embedded defaults), auth on",
    }
    return results


def _teardown(apps: list[tuple[str, Any]], stop_ray: bool) -> None:
    import ray
    from ray import serve

    for name, config in apps:
        serve.delete(name)
        serve.delete(f"{name}-floor")
        try:
            actor = ray.get_actor(config.jobs.tracker_name, namespace=config.jobs.namespace)
            ray.kill(actor, no_restart=True)
        except ValueError:
            pass
    if stop_ray:
        serve.shutdown()
        ray.shutdown()


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 tenants x 10, flood 30 + 3 + 3")
    p.add_argument("--tenants", type=int)
    p.add_argument("--jobs-per-tenant", type=int)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--flood", type=int)
    p.add_argument("--flood-small", type=int)
    p.add_argument("--submit-seconds", type=float)
    p.add_argument("--naive-sample", type=int)
    p.add_argument("--max-concurrent-jobs", type=int, default=4)
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--fifo-flood", action="store_true", help="the flood again, fair share off")
    p.add_argument("--http-url", help="Serve proxy of a running Ray (deploy there, no new Ray)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--clip-dir", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--model-cache", type=Path, default=MODEL_CACHE)
    a = p.parse_args(argv)
    quick = {
        "tenants": 3,
        "jobs_per_tenant": 10,
        "flood": 30,
        "flood_small": 3,
        "submit_seconds": 2.0,
        "naive_sample": 5,
    }
    full = {
        "tenants": 10,
        "jobs_per_tenant": 100,
        "flood": 500,
        "flood_small": 10,
        "submit_seconds": 10.0,
        "naive_sample": 40,
    }
    sizes = quick if a.quick else full
    picked = {k: getattr(a, k) if getattr(a, k) is not None else v for k, v in sizes.items()}
    return Options(
        quick=a.quick,
        rate=a.rate,
        max_concurrent_jobs=a.max_concurrent_jobs,
        timeout_s=a.timeout,
        http_url=a.http_url,
        fifo_flood=a.fifo_flood,
        out=a.out,
        clip_dir=a.clip_dir,
        model_cache=a.model_cache,
        command="python -m benchmarks.scale "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        **picked,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    opts = parse_args(argv)
    results = run(opts)
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "scale.json").write_text(json.dumps(results, indent=2) + "\n")
    text = scale_report.markdown(results)
    (opts.out / "scale.md").write_text(text)
    print(text)
    return results


if __name__ == "__main__":
    main()
