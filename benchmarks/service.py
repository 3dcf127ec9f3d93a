"""The service under test: start it locally (Ray + Serve app) or attach to a running one.

Also reads the Transcribers' batch statistics through the app handle and samples the RSS of
the Serve replica processes (found by process title, since the Ray dashboard is off).
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from pydantic import TypeAdapter

from serve_app.inference.protocol import ReplicaStats

DEFAULT_APP = "whisper"  # the name `serve_config.yaml` and the tests use
LOCAL_APP = "whisper-bench"  # a local run's own app: its replicas are told apart by title


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def set_model_nice(raw: dict[str, Any], nice: int) -> dict[str, Any]:
    """Set the niceness the compute processes add (models, SpeakerEmbedder, tracker) in a
    raw AppConfig dict, as the `--model-nice` A/Bs compare it; returns `raw`."""
    for model in raw["models"]:
        model["nice"] = nice
    raw.setdefault("speaker_embedder", {})["nice"] = nice
    raw.setdefault("jobs", {})["tracker_nice"] = nice
    return raw


def bench_config(
    models: list[str],
    batch_size: int,
    batch_wait_s: float,
    cpu_threads: int,
    cache_dir: Path,
    device: str = "cpu",
    num_gpus: float = 0.0,
    concurrent_batches: int = 1,
    busy_batch: int | None = None,
) -> dict[str, Any]:
    """App config for a local run: every model int8 on CPU with the same thread count.

    Fractional `num_cpus` lets an ingress, two model replicas and the job tracker fit on
    2 cores; `cpu_threads` is what sizes the real compute: a replica gets the same threads
    as a baseline, split over `concurrent_batches` batches at once (at least 1 each).
    `busy_batch` sets `busy_background_batch_size` (None: BatchSettings' default, as in
    serve_config.yaml).
    """
    threads = max(1, cpu_threads // concurrent_batches)
    batching: dict[str, Any] = {"max_batch_size": batch_size, "batch_wait_timeout_s": batch_wait_s}
    if busy_batch is not None:
        batching["busy_background_batch_size"] = busy_batch
    state = Path(tempfile.mkdtemp(prefix="whisper-bench-state-"))
    return {
        "default_model": models[0],
        "model_cache_dir": str(cache_dir),
        "ingress": {"num_cpus": 0.2},
        "storage": {
            "database_url": f"sqlite:///{state / 'jobs.db'}",
            "blob_url": f"file://{state / 'blobs'}",
        },
        "models": [
            {
                "name": name,
                "num_cpus": 0.5,
                "cpu_threads": threads,
                "concurrent_batches": concurrent_batches,
                "compute_type": "float16" if device == "cuda" else "int8",
                "device": device,
                "num_gpus": num_gpus,
                "max_ongoing_requests": max(32, 4 * batch_size),
                "batching": batching,
            }
            for name in models
        ],
    }


@dataclass
class Service:
    """Where the service answers and how to reach its handle (if this process can)."""

    url: str
    app_name: str
    started_here: bool = False

    def stats(self) -> dict[str, Any] | None:
        """Per-model Transcriber stats via `serve.get_app_handle(app).stats`, if reachable."""
        import ray

        if not ray.is_initialized():
            return None
        from ray import serve

        try:
            stats = serve.get_app_handle(self.app_name).stats.remote().result(timeout_s=60)
            return TypeAdapter(dict[str, ReplicaStats]).dump_python(stats, mode="json")
        except Exception:
            return None

    def stop(self) -> None:
        if not self.started_here:
            return
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()


def start_local(
    config: dict[str, Any], app_name: str = LOCAL_APP, num_cpus: int = 2, num_gpus: int = 0
) -> Service:
    """`ray.init(num_cpus=2)` + Serve on a free loopback port + the app, like the tests do."""
    import ray
    from ray import serve

    from serve_app.app import build_app
    from serve_app.config import AppConfig

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=False,
            logging_level="WARNING",
            log_to_driver=False,
        )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(AppConfig.model_validate(config)), name=app_name, route_prefix="/")
    service = Service(f"http://127.0.0.1:{port}", app_name, started_here)
    wait_ready(service.url)
    return service


def attach(url: str, app_name: str, ray_address: str | None) -> Service:
    """Use a running service; connect to its Ray cluster only when asked (for stats)."""
    import ray

    if ray_address and not ray.is_initialized():
        ray.init(address=ray_address, logging_level="WARNING", log_to_driver=False)
    wait_ready(url)
    return Service(url.rstrip("/"), app_name, started_here=False)


def wait_ready(url: str, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/readyz", timeout=10, trust_env=False)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(1.0)
    raise RuntimeError(f"service at {url} not ready after {timeout_s:.0f} s: {last}")


def batch_diff(before: dict[str, Any] | None, after: dict[str, Any] | None, model: str) -> dict:
    """Batches run between two `stats()` snapshots: {size: count} and the mean size."""
    if not before or not after or model not in after:
        return {"available": False}
    old = {int(k): v for k, v in (before.get(model) or {}).get("batch_sizes", {}).items()}
    new = {int(k): v for k, v in after[model].get("batch_sizes", {}).items()}
    hist = {s: n - old.get(s, 0) for s, n in sorted(new.items()) if n - old.get(s, 0) > 0}
    chunks = sum(s * n for s, n in hist.items())
    batches = sum(hist.values())
    out = {
        "available": True,
        "histogram": {str(s): n for s, n in hist.items()},
        "batches": batches,
        "chunks": chunks,
        "mean": round(chunks / batches, 2) if batches else None,
    }
    if "clips_per_window" in after[model]:  # window packing: chunks sharing one 30 s window
        prev = (before.get(model) or {}).get("clips_per_window", {})
        old_w = {int(k): v for k, v in prev.items()}
        new_w = {int(k): v for k, v in after[model]["clips_per_window"].items()}
        packed = {k: n - old_w.get(k, 0) for k, n in sorted(new_w.items()) if n > old_w.get(k, 0)}
        windows = sum(packed.values())
        out["packing"] = after[model].get("packing")
        out["clips_per_window"] = {str(k): n for k, n in packed.items()}
        out["windows"] = windows
    return out


def replica_processes(app_name: str) -> dict[str, psutil.Process]:
    """Serve replica processes of one app by title: `ray::ServeReplica:<app>:<deployment>`."""
    out: dict[str, psutil.Process] = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info.get("cmdline") or [])
        marker = f"ServeReplica:{app_name}:"
        if marker in cmd:
            deployment = cmd.split(marker, 1)[1].split()[0].split(".")[0]
            key = deployment if deployment not in out else f"{deployment}#{proc.pid}"
            out[key] = proc
    return out


@dataclass
class RssSampler:
    """Samples replica RSS in a thread during a phase; keeps the last and the peak (MiB)."""

    app_name: str
    interval_s: float = 0.5
    peak: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        for name, proc in replica_processes(self.app_name).items():
            try:
                rss = proc.memory_info().rss / 2**20
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            self.pids[name] = proc.pid
            self.last[name] = round(rss, 1)
            self.peak[name] = round(max(rss, self.peak.get(name, 0.0)), 1)

    def __enter__(self) -> RssSampler:
        self.sample()

        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                self.sample()

        self._thread = threading.Thread(target=loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sample()

    def result(self) -> dict[str, Any]:
        return {"peak_mb": dict(self.peak), "last_mb": dict(self.last), "pids": dict(self.pids)}
