"""Autoscaling from AppConfig: 1 → 2 replicas under load and back when idle; scale from zero.

The autoscaling_config of each model deployment comes from `ModelConfig.autoscaling`; the
tests only shorten its delays. Replica counts are read from `serve.status()`, the same view
`serve status` and the dashboard's Serve page give operators.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import transcribe

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "tiny.en"
DEPLOYMENT = "Transcriber-tiny_en"


def autoscaling_config(model_cache: Path, autoscaling: dict[str, Any]):
    from serve_app.config import AppConfig

    return AppConfig.model_validate(
        {
            "default_model": MODEL,
            "model_cache_dir": str(model_cache),
            "ingress": {"num_cpus": 0.1},
            "jobs": {"enabled": False},
            "models": [
                {
                    "name": MODEL,
                    # Small shares: a second replica must fit next to the session's apps.
                    "num_cpus": 0.2,
                    "cpu_threads": 1,
                    "max_ongoing_requests": 4,
                    # target_ongoing_requests = max_batch_size: one full batch per replica.
                    "batching": {"max_batch_size": 2, "batch_wait_timeout_s": 0.05},
                    "autoscaling": {
                        "target_ongoing_requests": 2,
                        "metrics_interval_s": 0.5,
                        "look_back_period_s": 2,
                        **autoscaling,
                    },
                }
            ],
        }
    )


@pytest.fixture
def deploy(ray_instance: dict) -> Iterator[Callable[[Any], str]]:
    """Deploy an app under a unique prefix; returns its base URL. Deleted afterwards."""
    from ray import serve

    from serve_app.app import build_app

    names: list[str] = []

    def run(config: Any) -> str:
        name = f"autoscale-{uuid.uuid4().hex[:6]}"
        names.append(name)
        serve.run(build_app(config), name=name, route_prefix=f"/{name}")
        return name

    try:
        yield run
    finally:
        for name in names:
            serve.delete(name)


def running_replicas(app: str) -> int:
    from ray import serve

    deployment = serve.status().applications[app].deployments[DEPLOYMENT]
    return int(deployment.replica_states.get("RUNNING", 0))


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout:.0f}s: {what}")


def test_scales_up_under_load_and_back_down_when_idle(deploy, ray_instance, model_cache, data_dir):
    config = autoscaling_config(
        model_cache,
        {"min_replicas": 1, "max_replicas": 2, "upscale_delay_s": 1, "downscale_delay_s": 3},
    )
    app = deploy(config)
    assert running_replicas(app) == 1
    url = f"{ray_instance['http_url']}/{app}"

    stop = threading.Event()
    texts: list[str] = []

    def client_loop() -> None:
        with httpx.Client(base_url=url, timeout=300) as client:
            while not stop.is_set():
                response = transcribe(client, data_dir / "train.wav")
                assert response.status_code == 200, response.text
                texts.append(response.json()["text"])

    # Eight callers keep ~8 chunks in flight: 4x the per-replica target of 2.
    with ThreadPoolExecutor(8) as pool:
        loops = [pool.submit(client_loop) for _ in range(8)]
        try:
            wait_for(lambda: running_replicas(app) >= 2, 240, "a second replica under load")
        finally:
            stop.set()
        for loop in loops:
            loop.result()
    assert texts and all("platform" in t.lower() for t in texts)

    wait_for(lambda: running_replicas(app) == 1, 180, "back to one replica when idle")
    with httpx.Client(base_url=url, timeout=300) as client:
        response = transcribe(client, data_dir / "hello.wav")
    assert response.status_code == 200
    assert "hello world" in response.json()["text"].lower()


def test_scales_from_zero_for_the_first_request(deploy, ray_instance, model_cache, data_dir):
    config = autoscaling_config(
        model_cache,
        {
            "min_replicas": 0,
            "initial_replicas": 0,
            "max_replicas": 1,
            "upscale_delay_s": 0,
            "downscale_delay_s": 2,
        },
    )
    app = deploy(config)
    assert running_replicas(app) == 0  # nothing runs (or holds CPU) until work arrives

    with httpx.Client(base_url=f"{ray_instance['http_url']}/{app}", timeout=300) as client:
        response = transcribe(client, data_dir / "hello.wav")
    assert response.status_code == 200, response.text
    assert "hello world" in response.json()["text"].lower()  # a replica was started for it

    wait_for(lambda: running_replicas(app) == 0, 120, "back to zero replicas when idle")
