"""Run by test_full_ray_restart in a subprocess: its own Ray, stopped entirely mid-way.

Phase 1 starts a local Ray, deploys the app on the given Postgres/S3, submits jobs, waits
until some chunks are checkpointed and shuts Ray down (every actor, the tracker included).
Phase 2 starts a brand-new Ray on the same storage and waits for every job to finish.
Prints one JSON line with what it saw. With `--late-jobs`, the config has auth on: a
"flood" tenant submits `--jobs`, then a "late" tenant `--late-jobs` (each with its own key),
and the line also carries every job's tenant and finish time (the fair-share drill).
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
    parser.add_argument("--late-jobs", type=int, default=0)
    args = parser.parse_args()
    audio = Path(args.audio).read_bytes()
    keys = _keys(args.config, ["flood", "late"]) if args.late_jobs else {}
    owner: dict[str, str] = {}

    client = _start(args.config)
    ids = []
    plan = [("flood", args.jobs), ("late", args.late_jobs)] if keys else [("", args.jobs)]
    for tenant, count in plan:
        for _ in range(count):
            response = client.post(
                "/v1/jobs",
                files={"file": ("audio.wav", audio)},
                headers={"Idempotency-Key": uuid.uuid4().hex, **_auth(keys.get(tenant))},
            )
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
            owner[ids[-1]] = tenant
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        views = [_get(client, keys, owner, i) for i in ids]
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
        views = [_get(client, keys, owner, i) for i in ids]
        final = {v["id"]: v["status"] for v in views}
        if all(s in ("succeeded", "failed", "cancelled") for s in final.values()):
            break
        time.sleep(0.5)
    texts = [
        client.get(f"/v1/jobs/{i}/result", headers=_auth(keys.get(owner[i]))).json().get("text")
        for i in ids
    ]
    _stop()
    jobs = [{"tenant": owner[v["id"]], "finished_at": v["finished_at"]} for v in views]
    print(json.dumps({"before": before, "final": final, "texts": texts, "jobs": jobs}))
    return 0


def _keys(config_json: str, tenants: list[str]) -> dict[str, str]:
    from serve_app.config import AppConfig
    from serve_app.security.keys import create_key
    from serve_app.stores import open_job_store

    config = AppConfig.model_validate_json(config_json)
    with open_job_store(config.storage.database_url, migrate=True) as store:
        return {tenant: create_key(store, tenant, tenant)[0] for tenant in tenants}


def _auth(key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"} if key else {}


def _get(client: httpx.Client, keys: dict[str, str], owner: dict[str, str], job_id: str) -> dict:
    return client.get(f"/v1/jobs/{job_id}", headers=_auth(keys.get(owner[job_id]))).json()


if __name__ == "__main__":
    sys.exit(main())
