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
