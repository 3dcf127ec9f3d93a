"""Run by test_multinode in a subprocess: a two-raylet cluster on this one machine.

Mirrors cluster.yaml: a CPU-only "head" node (custom resource `head`) that hosts the Serve
controller, the HTTP proxy, the Ingress and the JobTracker, and a "gpu worker" with one
logical GPU where the model replicas pack in fractional shares. Deploys the app, asks
every replica where it runs, serves requests and a job, and prints one JSON line.

`ray.cluster_utils.Cluster` cannot share a process with an initialised Ray, hence the
subprocess. HTTP (proxy, dashboard) binds 127.0.0.1, and RAY_TMPDIR points at a private
directory so the cluster's address file never redirects another `ray.init()` here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

# Shared with scripts/dashboard_check.py; this file runs as a script, not inside a package.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from local_ray import GPU_SHARES, LOOPBACK, free_port, gpu_models

APP_NAME = "whisper"
HEAD_SHARE = 0.01  # of the custom `head` resource: pins light actors to the head node


def app_config(cache_dir: str, state_dir: Path) -> Any:
    from serve_app.config import AppConfig

    return AppConfig.model_validate(
        {
            "default_model": "tiny.en",
            "model_cache_dir": cache_dir,
            "ingress": {"num_cpus": 0.1, "resources": {"head": HEAD_SHARE}},
            "storage": {
                "database_url": f"sqlite:///{state_dir}/jobs.db",
                "blob_url": f"file://{state_dir}/blobs",
            },
            "jobs": {
                "tracker_name": "tracker-multinode",
                "tracker_num_cpus": 0.05,
                "tracker_resources": {"head": HEAD_SHARE},
                "poll_interval_s": 0.5,
            },
            "models": gpu_models(),
        }
    )


def transcriber_describe(model: str) -> dict[str, Any]:
    from ray import serve

    from serve_app.config import ModelConfig

    name = ModelConfig(name=model).deployment_name
    handle = serve.get_deployment_handle(name, app_name=APP_NAME)
    return dataclasses.asdict(handle.describe.remote().result())


def actor_nodes(class_names: list[str]) -> dict[str, list[str]]:
    """Node ids of alive actors by class, from Ray's state API (controller, proxy, tracker)."""
    from ray.util.state import list_actors

    out: dict[str, list[str]] = {name: [] for name in class_names}
    for actor in list_actors(filters=[("state", "=", "ALIVE")], limit=1000):
        if actor.class_name in out:
            out[actor.class_name].append(actor.node_id)
    return out


def run(cache_dir: str, audio_dir: Path, temp_dir: Path) -> dict[str, Any]:
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from serve_app.app import build_app

    common = {"object_store_memory": 150 * 1024 * 1024}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            **common,
            "num_cpus": 1,
            "num_gpus": 0,
            "resources": {"head": 1},
            "include_dashboard": True,  # the state API (actor placement) is served by it
            "dashboard_host": LOOPBACK,
            "dashboard_port": free_port(),
            "dashboard_agent_listen_port": free_port(),
        },
    )
    try:
        gpu_node = cluster.add_node(**common, num_cpus=1, num_gpus=1)
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        port = free_port()
        serve.start(http_options={"host": LOOPBACK, "port": port}, proxy_location="HeadOnly")
        serve.run(build_app(app_config(cache_dir, temp_dir)), name=APP_NAME, route_prefix="/")

        report: dict[str, Any] = {
            "head_node": cluster.head_node.node_id,
            "gpu_node": gpu_node.node_id,
            "nodes": {
                n["NodeID"]: {k: v for k, v in n["Resources"].items() if "_group_" not in k}
                for n in ray.nodes()
                if n["Alive"]
            },
            "ingress": dataclasses.asdict(
                serve.get_app_handle(APP_NAME).describe.remote().result()
            ),
            "transcribers": {model: transcriber_describe(model) for model in GPU_SHARES},
        }
        with httpx.Client(base_url=f"http://{LOOPBACK}:{port}", timeout=300) as client:
            texts = {}
            for model, clip in (("tiny.en", "train.wav"), ("base", "hello.wav")):
                with (audio_dir / clip).open("rb") as audio:
                    response = client.post(
                        "/v1/audio/transcriptions",
                        files={"file": (clip, audio)},
                        data={"model": model},
                    )
                texts[model] = response.json().get("text") if response.is_success else None
            report["texts"] = texts
            report["job"] = run_job(client, audio_dir / "weather.wav")
            # After the job: the Ingress creates the tracker without waiting for it.
            report["actors"] = actor_nodes(["TrackerActor", "ServeController", "ProxyActor"])
            scrape = client.get("/metrics")
            report["metrics"] = {
                "status": scrape.status_code,
                "scrape_failures": scrape.text.count("# scrape failed"),
            }
        return report
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        cluster.shutdown()


def run_job(client: httpx.Client, clip: Path) -> dict[str, Any]:
    """One job through the tracker on the head node and the replicas on the GPU node."""
    with clip.open("rb") as audio:
        submitted = client.post("/v1/jobs", files={"file": (clip.name, audio)})
    if submitted.status_code != 202:
        return {"status": f"http {submitted.status_code}"}
    job_id = submitted.json()["id"]
    deadline = time.monotonic() + 240
    status = "queued"
    while time.monotonic() < deadline and status not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.5)
        status = client.get(f"/v1/jobs/{job_id}").json()["status"]
    text = None
    if status == "succeeded":
        text = client.get(f"/v1/jobs/{job_id}/result").json().get("text")
    return {"status": status, "text": text}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache-dir", default="~/.cache/whisper-serve/models")
    parser.add_argument("--audio-dir", type=Path, default=Path("tests/data"))
    args = parser.parse_args()
    # Short path (unix socket names are limited to ~107 bytes) of our own.
    temp_dir = Path(tempfile.mkdtemp(prefix="rmn-", dir="/tmp"))
    os.environ["RAY_TMPDIR"] = str(temp_dir)
    # A throwaway test cluster; forced because a parent that ran ray.init() exported "token".
    os.environ["RAY_AUTH_MODE"] = "disabled"
    try:
        report = run(args.cache_dir, args.audio_dir, temp_dir)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
