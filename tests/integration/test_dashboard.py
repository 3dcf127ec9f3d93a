"""Operator tools on a real deployment: the dashboard's Serve page and live batch tuning.

Runs scripts/dashboard_check.py once (also `make dashboard-check`, which refreshes the
README's docs/dashboard-serve.png) in a subprocess, since it needs its own Ray with the
dashboard on: it deploys with `serve deploy`, redeploys with a new `user_config`, and opens
the Serve page in headless Chromium.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
DEPLOYMENTS = {"Ingress", "Transcriber-tiny_en", "Transcriber-base", "SpeakerEmbedder"}


@pytest.fixture(scope="module")
def check(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: run `make system-deps`"
    png = tmp_path_factory.mktemp("dashboard") / "serve.png"
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "dashboard_check.py"),
            "--out",
            str(png),
            "--cache-dir",
            str(model_cache),
            "--chromium",
            chromium,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert completed.stdout.strip(), completed.stderr[-4000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    report["png_path"] = png
    return report


def test_serve_page_lists_the_app_and_its_model_deployments(check):
    # The dashboard's own REST view of Serve…
    assert check["api"]["app_status"] == "RUNNING"
    assert set(check["api"]["deployments"]) == DEPLOYMENTS
    assert set(check["api"]["deployments"].values()) == {"HEALTHY"}
    # …and what the browser rendered from it.
    assert check["page"]["missing"] == []
    assert "whisper" in check["page"]["text"] and "HEALTHY" in check["page"]["text"]
    assert "hello world" in check["transcript"].lower()

    header = check["png_path"].read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert width >= 1200 and height >= 600


def test_serve_deploy_with_new_user_config_retunes_the_running_replica(check):
    change = check["reconfigure"]
    assert change["before"]["settings"]["max_batch_size"] == 4
    after = change["after"]["settings"]
    assert {name: after[name] for name in change["wanted"]} == change["wanted"]
    assert change["after"]["replica"] == change["before"]["replica"]  # reconfigured, not replaced
