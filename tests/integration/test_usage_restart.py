"""Usage on Postgres survives a service restart: a mixed run (sync, streamed, job), a new
service over the same database and blob store, and `/v1/usage` still adds up."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest

from serve_app.config import AppConfig
from serve_app.inference.replica import ModelReplica
from serve_app.security.keys import create_key
from serve_app.testing import LocalStack
from tests.unit.conftest import LOOP, TINY, wait_job

pytestmark = [LOOP, pytest.mark.integration]


def _seconds(path: Path) -> float:
    with wave.open(str(path)) as wav:
        return wav.getnframes() / wav.getframerate()


def _config(postgres_url: str, root: Path) -> AppConfig:
    return AppConfig(
        models=[TINY],
        storage={"database_url": postgres_url, "blob_url": f"file://{root}/blobs"},
        jobs={"poll_interval_s": 0.2, "max_concurrent_jobs": 2},
        limits={"decode_workers": 1},
        auth={"enabled": True},
    )


async def test_usage_figures_survive_a_restart_on_postgres(
    postgres_url: str, tmp_path: Path, tiny: ModelReplica, data_dir: Path
) -> None:
    config = _config(postgres_url, tmp_path)
    sync, streamed, job = data_dir / "hello.wav", data_dir / "weather.wav", data_dir / "numbers.wav"
    sent = _seconds(sync) + _seconds(streamed) + _seconds(job)
    async with LocalStack(config, replicas={"tiny.en": tiny}) as first:
        assert first.jobs is not None
        key, _ = create_key(first.jobs.store, "acme", "ci")
        headers = {"authorization": f"Bearer {key}"}
        async with first.http(headers) as client:
            response = await client.post(
                "/v1/audio/transcriptions", files={"file": ("a.wav", sync.read_bytes())}
            )
            assert response.status_code == 200, response.text
            async with client.stream(
                "POST",
                "/v1/audio/transcriptions",
                files={"file": ("b.wav", streamed.read_bytes())},
                data={"stream": "true"},
            ) as events:
                assert "transcript.text.done" in (await events.aread()).decode()
            submitted = await client.post("/v1/jobs", files={"file": ("c.wav", job.read_bytes())})
            assert (await wait_job(client, submitted.json()["id"]))["status"] == "succeeded"
            before = (await client.get("/v1/usage")).json()
    assert abs(before["total_seconds"] - sent) <= 0.005 * sent, (before, sent)

    # A new service process over the same Postgres: nothing in memory carries over.
    async with (
        LocalStack(config, replicas={"tiny.en": tiny}) as second,
        second.http(headers) as client,
    ):
        after = (await client.get("/v1/usage")).json()
    assert after["total_seconds"] == pytest.approx(before["total_seconds"])
    assert after["data"] == before["data"]
