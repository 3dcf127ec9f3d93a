"""Job-submit latency while jobs run, A/B over the model's CPU priority.

    python -m benchmarks.submit_ab                   # nice 0 vs 10, 2 rounds of 400 each
    python -m benchmarks.submit_ab --nice 0,10,19 --rounds 3

For each niceness N the app of `benchmarks.scale` (tiny.en, 4 job slots, SQLite + folder,
auth on) is deployed with `models[].nice`, `speaker_embedder.nice` and `jobs.tracker_nice`
set to N (the Ingress stays at 0). Each round submits `--submits` jobs from 5 tenants at
`--rate`/s while the earlier ones are transcribed on the same cores, then cancels what is
left so the next round starts alike. Prints and writes `results/submit_ab.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.clips import DEFAULT_CACHE, job_clip
from benchmarks.scale import Options, _teardown, app_config, cancel_submitted, deploy, log
from benchmarks.scale_load import Bench, submit_open_loop, submit_summary
from benchmarks.service import set_model_nice

RESULTS = Path(__file__).resolve().parent / "results"


def niced_config(opts: Options, name: str, nice: int) -> Any:
    from serve_app.config import AppConfig

    return AppConfig.model_validate(set_model_nice(app_config(opts, name).model_dump(), nice))


def run_one(opts: Options, nice: int, rounds: int, submits: int) -> list[dict[str, Any]]:
    name = f"ab{nice}-{uuid.uuid4().hex[:6]}"
    config = niced_config(opts, name, nice)
    url, _base, started = deploy(None, name, config)
    bench = Bench(url, config.storage.database_url, job_clip(opts.clip_dir))
    out: list[dict[str, Any]] = []
    try:
        asyncio.run(submit_open_loop(bench, ["warm"], 20, 20))
        time.sleep(10)
        for n in range(rounds):
            tenants = [f"r{n}-{i}" for i in range(5)]
            records = asyncio.run(submit_open_loop(bench, tenants, submits, opts.rate))
            summary = submit_summary(records)
            log(f"nice {nice}, round {n}: {summary['latency_s']}")
            out.append(summary)
            time.sleep(5)
            asyncio.run(cancel_submitted(bench, records))
            time.sleep(10)
    finally:
        _teardown([(name, config)], started)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nice", default="0,10", help="comma-separated niceness values")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--submits", type=int, default=400)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    opts = Options(rate=a.rate, clip_dir=DEFAULT_CACHE)
    results = {
        str(nice): run_one(opts, int(nice), a.rounds, a.submits) for nice in a.nice.split(",")
    }
    for nice, rounds in results.items():
        p99 = ", ".join(f"{r['latency_s']['p99'] * 1000:.0f}" for r in rounds)
        p50 = ", ".join(f"{r['latency_s']['p50'] * 1000:.0f}" for r in rounds)
        print(f"nice {nice}: submit p50 {p50} ms; p99 {p99} ms")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "submit_ab.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
