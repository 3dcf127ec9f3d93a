"""Run by test_full_ray_restart in a subprocess: its own Ray, stopped entirely mid-way.

Phase 1 starts a local Ray, deploys the app on the given Postgres/S3, submits jobs, waits
until some chunks are checkpointed and shuts Ray down (every actor, the tracker included).
Phase 2 starts a brand-new Ray on the same storage and waits for every job to finish.
Prints one JSON line with what it saw.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
import uuid
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(config_json: str):
    import ray
    from ray import serve

    from serve_app.app import build_app
    from serve_app.config import AppConfig

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
    )
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(
        build_app(AppConfig.model_validate_json(config_json)), name="restart", route_prefix="/"
    )
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)


def _stop() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True, help="AppConfig JSON")
    parser.add_argument("--audio", required=True)
    parser.add_argument("--jobs", type=int, default=4)
    args = parser.parse_args()
    audio = Path(args.audio).read_bytes()

    client = _start(args.config)
    ids = []
    for _ in range(args.jobs):
        response = client.post(
            "/v1/jobs",
            files={"file": ("audio.wav", audio)},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        views = [client.get(f"/v1/jobs/{i}").json() for i in ids]
        if sum(v["done_chunks"] for v in views) >= 1:
            break
        time.sleep(0.2)
    before = {v["id"]: v["status"] for v in views}
    client.close()
    _stop()  # Ray is gone entirely, jobs still in flight

    client = _start(args.config)
    deadline = time.monotonic() + 240
    final = {}
    while time.monotonic() < deadline:
        final = {i: client.get(f"/v1/jobs/{i}").json()["status"] for i in ids}
        if all(s in ("succeeded", "failed", "cancelled") for s in final.values()):
            break
        time.sleep(0.5)
    texts = [client.get(f"/v1/jobs/{i}/result").json().get("text") for i in ids]
    _stop()
    print(json.dumps({"before": before, "final": final, "texts": texts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
