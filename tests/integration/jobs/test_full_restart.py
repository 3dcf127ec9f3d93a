"""Stop Ray entirely with jobs in flight, start the app again on the same storage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.jobs.conftest import jobs_app_config, real_storage

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_every_job_finishes_after_a_full_ray_restart(request, model_cache, data_dir):
    storage = real_storage(request)
    config = jobs_app_config(model_cache, "real", storage, "restart")
    script = Path(__file__).with_name("restart_scenario.py")
    completed = subprocess.run(
        [
            sys.executable,
            str(script),
            "--config",
            config.model_dump_json(),
            "--audio",
            str(data_dir / "story.flac"),
            "--jobs",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).parents[3],
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert any(s in ("queued", "running") for s in report["before"].values()), report
    assert set(report["final"].values()) == {"succeeded"}, report
    assert all("village" in (t or "").lower() for t in report["texts"])
