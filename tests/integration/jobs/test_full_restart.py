"""Stop Ray entirely with jobs in flight, start the app again on the same storage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.jobs.conftest import jobs_app_config, real_storage

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _long_audio(data_dir: Path, path: Path, repeats: int) -> Path:
    """Several copies of the story: many chunks per job, so jobs are mid-way at the stop."""
    import wave

    import numpy as np

    from serve_app.pipeline.decode import decode_audio

    samples = decode_audio((data_dir / "story.flac").read_bytes(), max_duration_s=600).samples
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes((np.tile(samples, repeats) * 32767).astype(np.int16).tobytes())
    return path


def test_every_job_finishes_after_a_full_ray_restart(request, model_cache, data_dir, tmp_path):
    storage = real_storage(request)
    audio = _long_audio(data_dir, tmp_path / "long.wav", repeats=3)
    config = jobs_app_config(model_cache, "real", storage, "restart")
    script = Path(__file__).with_name("restart_scenario.py")
    completed = subprocess.run(
        [
            sys.executable,
            str(script),
            "--config",
            config.model_dump_json(),
            "--audio",
            str(audio),
            "--jobs",
            "6",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).parents[3],
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert any(s in ("queued", "running") for s in report["before"].values()), report["before"]
    assert set(report["final"].values()) == {"succeeded"}, report["final"]
    assert all("village" in (t or "").lower() for t in report["texts"])


def test_a_full_ray_restart_during_a_flood_loses_nothing_and_the_share_holds(
    request, model_cache, data_dir, tmp_path
):
    """Fair share after recovery: the late tenant's queued jobs do not wait for the flood."""
    from datetime import datetime

    from serve_app.config import AppConfig

    storage = real_storage(request)
    raw = jobs_app_config(model_cache, "real", storage, "restart-fair").model_dump()
    raw["auth"] = {"enabled": True}
    config = AppConfig.model_validate(raw)
    script = Path(__file__).with_name("restart_scenario.py")
    args = ["--audio", str(data_dir / "weather.wav"), "--jobs", "16", "--late-jobs", "4"]
    completed = subprocess.run(
        [sys.executable, str(script), "--config", config.model_dump_json(), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).parents[3],
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert any(s in ("queued", "running") for s in report["before"].values()), report["before"]
    assert set(report["final"].values()) == {"succeeded"}, report["final"]
    assert len(report["final"]) == 20
    done = {
        tenant: sorted(
            datetime.fromisoformat(j["finished_at"])
            for j in report["jobs"]
            if j["tenant"] == tenant
        )
        for tenant in ("flood", "late")
    }
    assert len(done["flood"]) == 16 and len(done["late"]) == 4
    assert done["late"][-1] < done["flood"][11], done  # the late tenant is not behind the flood
