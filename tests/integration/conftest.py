"""The shared deployed app: tiny.en and base on fractional (logical) GPU shares."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve_app.inference.replica import ModelReplica
from serve_app.testing import load_replica
from tests.unit.conftest import TINY

APP_NAME = "whisper"
GPU_SHARES = {"tiny.en": 0.25, "base": 0.5}


def app_config(model_cache: Path, **overrides: Any):
    from serve_app.config import AppConfig

    raw: dict[str, Any] = {
        "default_model": "tiny.en",
        "model_cache_dir": str(model_cache),
        "ingress": {"num_cpus": 0.1},
        "storage": {
            "database_url": f"sqlite:///{model_cache}/session-jobs.db",
            "blob_url": f"file://{model_cache}/session-blobs",
        },
        "jobs": {"tracker_name": "tracker-session", "tracker_num_cpus": 0.05},
        "limits": {"max_upload_bytes": 8 * 1024 * 1024, "max_audio_duration_s": 600},
        "models": [
            {
                "name": "tiny.en",
                "aliases": ["whisper-1"],
                "num_cpus": 0.3,
                "num_gpus": GPU_SHARES["tiny.en"],
                # As serve_config.yaml runs it: two batches at once, one thread each.
                "cpu_threads": 1,
                "concurrent_batches": 2,
                "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.2},
                # Exact equality with faster-whisper is tested here; packing has its own tests.
                "packing": {"mode": "off"},
            },
            {
                "name": "base",
                "num_cpus": 0.3,
                "num_gpus": GPU_SHARES["base"],
                "cpu_threads": 2,
                "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.2},
                # Exact equality with faster-whisper is tested here; packing has its own tests.
                "packing": {"mode": "off"},
            },
        ],
    }
    raw.update(overrides)
    return AppConfig.model_validate(raw)


@dataclass
class DeployedApp:
    url: str
    config: Any
    handle: Any
    name: str


@pytest.fixture(scope="module")
def tiny(model_cache: Path) -> Iterator[ModelReplica]:
    """A tiny.en replica in the test process, for modules that run the app without Ray."""
    loaded = load_replica(TINY, model_cache)
    yield loaded
    loaded.close()


@pytest.fixture(scope="session")
def whisper_app(ray_instance: dict, model_cache: Path) -> Iterator[DeployedApp]:
    from ray import serve

    from serve_app.app import build_app

    config = app_config(model_cache)
    serve.run(build_app(config), name=APP_NAME, route_prefix="/")
    try:
        yield DeployedApp(
            url=ray_instance["http_url"],
            config=config,
            handle=serve.get_app_handle(APP_NAME),
            name=APP_NAME,
        )
    finally:
        serve.delete(APP_NAME)


@contextmanager
def deployed(config: Any, name: str, http_url: str) -> Iterator[str]:
    """Run `config` as the Serve app `name` under `/name` and yield its URL; afterwards delete
    the app and kill its job tracker."""
    from ray import serve

    from serve_app.app import build_app

    serve.run(build_app(config), name=name, route_prefix=f"/{name}")
    try:
        yield f"{http_url}/{name}"
    finally:
        serve.delete(name)
        kill_tracker(config)


def kill_tracker(config: Any) -> None:
    """The tracker is a detached actor: `serve.delete` leaves it running."""
    import ray

    try:
        actor = ray.get_actor(config.jobs.tracker_name, namespace=config.jobs.namespace)
    except ValueError:
        return
    ray.kill(actor, no_restart=True)


@pytest.fixture
def http(whisper_app: DeployedApp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=whisper_app.url, timeout=300) as client:
        yield client


@pytest.fixture(scope="session")
def direct_pipelines(model_cache: Path) -> dict[str, Any]:
    """Plain faster-whisper BatchedInferencePipelines in the test process (the reference)."""
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from serve_app.inference.weights import resolve_weights

    out = {}
    for name in ("tiny.en", "base"):
        path = resolve_weights(f"bundled:{name}", model_cache)
        model = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=2)
        out[name] = BatchedInferencePipeline(model)
    return out


def wait_job(client: httpx.Client, job_id: str, timeout: float = 240) -> dict[str, Any]:
    """Poll a job until it succeeds, fails or is cancelled; its last JSON."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {job.get('status')} after {timeout}s")


def transcribe(client: httpx.Client, path: Path, **data: Any) -> httpx.Response:
    with path.open("rb") as handle:
        return client.post(
            "/v1/audio/transcriptions", files={"file": (path.name, handle)}, data=data
        )


@pytest.fixture
def webhook_receiver() -> Iterator[dict[str, Any]]:
    """Loopback receiver that answers 500 to the first POST and 204 afterwards."""
    state: dict[str, Any] = {"posts": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return None

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state["posts"] += 1
            self.send_response(500 if state["posts"] == 1 else 204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/hook"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
