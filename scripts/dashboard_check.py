"""Operator check with Ray's own tools: `make dashboard-check`.

Starts its own single-node Ray (dashboard on 127.0.0.1, one logical GPU) in a temporary
directory and deploys the app the way an operator does, with `serve deploy <config.yaml>`
(tiny.en + base behind the Ingress). Then:

1. Live batch tuning: deploys the same file again with only a new `user_config` for the
   tiny.en deployment and checks that the running replica took the new batch settings
   without being replaced (same replica id).
2. Dashboard: drives headless Chromium through the DevTools protocol, opens the Serve page,
   waits until it lists the application and its model deployments and saves a PNG. It also
   reads the dashboard's REST API (`/api/serve/applications/`), so the check does not rest
   on the picture alone.

Prints one JSON line with what it saw; exits non-zero when a check failed. HTTP stays on
loopback: Serve and the dashboard bind 127.0.0.1, and Chromium runs with background
networking off and a host resolver that refuses every name but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from browser import screenshot  # sibling modules: this file runs as a script
from local_ray import free_port, gpu_models

ROOT = Path(__file__).resolve().parents[1]
APP_NAME = "whisper"


def serve_config(cache_dir: str, state_dir: Path, http_port: int) -> dict[str, Any]:
    """A serve_config.yaml for this machine: tiny.en + base on fractional logical GPUs."""
    args = {
        "default_model": "tiny.en",
        "model_cache_dir": cache_dir,
        "ingress": {"num_cpus": 0.1},
        "storage": {
            "database_url": f"sqlite:///{state_dir}/jobs.db",
            "blob_url": f"file://{state_dir}/blobs",
        },
        "jobs": {"tracker_name": "tracker-dashboard", "tracker_num_cpus": 0.05},
        "models": gpu_models(autoscaling={"min_replicas": 1, "max_replicas": 2}),
    }
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": http_port},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": "serve_app.app:build_app",
                "args": args,
            }
        ],
    }


def start_ray(temp_dir: Path) -> str:
    """Local Ray with the dashboard on loopback; returns the dashboard URL."""
    import ray

    dashboard_port = free_port()
    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=1,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=dashboard_port,
        logging_level="ERROR",
        log_to_driver=False,
        _temp_dir=str(temp_dir / "ray"),
    )
    return f"http://127.0.0.1:{dashboard_port}"


def serve_deploy(config: dict[str, Any], path: Path, dashboard: str) -> None:
    """`serve deploy <file>`: the operator's command, through the dashboard's REST API."""
    import yaml

    path.write_text(yaml.safe_dump(config, sort_keys=False))
    serve_cli = Path(sys.executable).with_name("serve")
    subprocess.run(
        [str(serve_cli), "deploy", str(path), "--address", dashboard],
        check=True,
        capture_output=True,
        timeout=120,
    )


def tiny_stats() -> dict[str, Any]:
    from pydantic import TypeAdapter
    from ray import serve

    from serve_app.inference.protocol import ReplicaStats

    handle = serve.get_deployment_handle("Transcriber-tiny_en", app_name=APP_NAME)
    stats = handle.stats.remote().result(timeout_s=60)
    return TypeAdapter(ReplicaStats).dump_python(stats, mode="json")


def live_reconfigure(
    config: dict[str, Any], path: Path, dashboard: str, timeout_s: float
) -> dict[str, Any]:
    """Redeploy with only a new user_config for tiny.en; the same replica must pick it up."""
    wanted = {"max_batch_size": 6, "batch_wait_timeout_s": 0.2}
    before = tiny_stats()
    app = config["applications"][0]
    app["deployments"] = [{"name": "Transcriber-tiny_en", "user_config": wanted}]
    serve_deploy(config, path, dashboard)
    deadline = time.monotonic() + timeout_s
    after = tiny_stats()
    while time.monotonic() < deadline and after["settings"]["max_batch_size"] != 6:
        time.sleep(1)
        after = tiny_stats()
    return {
        "wanted": wanted,
        "before": {"replica": before["replica"], "settings": before["settings"]},
        "after": {"replica": after["replica"], "settings": after["settings"]},
    }


def serve_api(dashboard: str, timeout_s: float) -> dict[str, Any]:
    """The dashboard's own view of Serve, polled until every deployment is RUNNING."""
    deadline = time.monotonic() + timeout_s
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{dashboard}/api/serve/applications/", timeout=10)
            if response.status_code in (401, 403):
                raise RuntimeError(f"dashboard refused the request: {response.text[:200]}")
            body = response.json()
        except (httpx.HTTPError, ValueError):
            time.sleep(1)
            continue
        app = body.get("applications", {}).get(APP_NAME, {})
        seen = {
            "app_status": app.get("status"),
            "deployments": {
                name: d.get("status") for name, d in app.get("deployments", {}).items()
            },
        }
        if seen["app_status"] == "RUNNING" and seen["deployments"]:
            return seen
        time.sleep(1)
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard-serve.png")
    parser.add_argument("--cache-dir", default="~/.cache/whisper-serve/models")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()

    # A loopback-only throwaway cluster: no token to paste into the browser's login form.
    # Forced, not defaulted: a parent that ran ray.init() exported RAY_AUTH_MODE=token.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    temp_dir = Path(tempfile.mkdtemp(prefix="rdash-"))
    report: dict[str, Any] = {}
    try:
        dashboard = start_ray(temp_dir)
        http_port = free_port()
        config = serve_config(args.cache_dir, temp_dir, http_port)
        config_path = temp_dir / "serve_config.yaml"
        serve_deploy(config, config_path, dashboard)
        report["api"] = serve_api(dashboard, args.timeout)
        with (ROOT / "tests" / "data" / "hello.wav").open("rb") as audio:
            response = httpx.post(
                f"http://127.0.0.1:{http_port}/v1/audio/transcriptions",
                files={"file": ("hello.wav", audio)},
                data={"model": "tiny.en"},
                timeout=300,
            )
        report["transcript"] = response.json().get("text")
        report["reconfigure"] = live_reconfigure(config, config_path, dashboard, args.timeout)
        report["api"] = serve_api(dashboard, args.timeout)
        expect = [APP_NAME, *report["api"].get("deployments", {})]
        page = asyncio.run(
            screenshot(f"{dashboard}/#/serve", args.out, expect, args.chromium, args.timeout)
        )
        report.update(page=page, png=str(args.out), png_bytes=args.out.stat().st_size)
    finally:
        import ray
        from ray import serve

        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    print(json.dumps(report))
    change = report["reconfigure"]
    live = (
        change["after"]["replica"] == change["before"]["replica"]
        and change["after"]["settings"]["max_batch_size"] == change["wanted"]["max_batch_size"]
    )
    return 0 if live and not report["page"]["missing"] else 1


if __name__ == "__main__":
    sys.exit(main())
