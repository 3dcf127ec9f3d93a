"""The options of one benchmark run (set by `benchmarks.run.parse_args`) and its log line."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.clips import DEFAULT_CACHE, ENGLISH_FIXTURES

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
    # The service splits the same cpu_threads over this many batches at once (>= 1 each).
    concurrent_batches: int = 2
    # Most chunks in a job's batch while interactive work is around; None: BatchSettings'.
    busy_batch: int | None = None
    device: str = "cpu"  # "cuda" on a GPU box (float16 instead of int8)
    num_gpus: float = 0.0  # GPU share per model replica
    ray_cpus: int = 2
    ingress_nice: int | None = None  # None: AppConfig's default
    model_nice: int | None = None  # models, SpeakerEmbedder and tracker; None: AppConfig's
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
