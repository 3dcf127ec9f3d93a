"""Usage metering: a mixed run adds up to the audio sent; a daily quota refuses the excess."""

from __future__ import annotations

import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from serve_app.config import AppConfig
from serve_app.inference.replica import ModelReplica
from serve_app.security.keys import create_key
from serve_app.testing import LocalStack
from tests.unit.conftest import LOOP, assert_error, stack_config, wait_job

pytestmark = LOOP


def _seconds(path: Path) -> float:
    with wave.open(str(path)) as wav:
        return wav.getnframes() / wav.getframerate()


@pytest_asyncio.fixture(loop_scope="session")
async def metered(tmp_path: Path, replica: ModelReplica) -> AsyncIterator[LocalStack]:
    base = stack_config(tmp_path).model_dump()
    config = AppConfig.model_validate(
        {
            **base,
            "auth": {"enabled": True},
            "rate_limit": {"per_key": {"frugal": {"audio_minutes_per_day": 0.1}}},
        }
    )
    async with LocalStack(config, replicas={"tiny.en": replica}) as entered:
        yield entered


def _client(stack: LocalStack, tenant: str, name: str):
    assert stack.jobs is not None
    key, _ = create_key(stack.jobs.store, tenant, name)
    return stack.http({"authorization": f"Bearer {key}"})


async def test_mixed_run_adds_up_to_the_audio_sent(metered, data_dir):
    sync, streamed, job = data_dir / "hello.wav", data_dir / "weather.wav", data_dir / "numbers.wav"
    async with _client(metered, "acme", "ci") as client, _client(metered, "other", "x") as other:
        response = await client.post(
            "/v1/audio/transcriptions", files={"file": ("a.wav", sync.read_bytes())}
        )
        assert response.status_code == 200, response.text
        assert abs(response.json()["usage"]["seconds"] - _seconds(sync)) < 0.1
        async with client.stream(
            "POST",
            "/v1/audio/transcriptions",
            files={"file": ("b.wav", streamed.read_bytes())},
            data={"stream": "true"},
        ) as events:
            body = (await events.aread()).decode()
        assert "transcript.text.done" in body
        submitted = await client.post("/v1/jobs", files={"file": ("c.wav", job.read_bytes())})
        done = await wait_job(client, submitted.json()["id"])
        assert done["status"] == "succeeded", done
        # Another tenant's usage is not in acme's report.
        await other.post("/v1/audio/transcriptions", files={"file": ("d.wav", sync.read_bytes())})

        report = (await client.get("/v1/usage")).json()
        sent = _seconds(sync) + _seconds(streamed) + _seconds(job)
        assert report["tenant"] == "acme"
        assert abs(report["total_seconds"] - sent) <= 0.005 * sent, (report, sent)
        assert {e["source"] for e in report["data"]} == {"sync", "job"}
        assert sum(e["requests"] for e in report["data"]) == 3
        assert (await other.get("/v1/usage")).json()["total_seconds"] < sent
        assert (
            await client.get("/v1/usage", params={"from": "2000-01-01", "to": "2000-01-02"})
        ).json()["data"] == []
        assert_error(await client.get("/v1/usage", params={"from": "yesterday"}), 400)
        assert_error(
            await client.get("/v1/usage", params={"from": "2030-01-02", "to": "2030-01-01"}), 400
        )


async def test_daily_quota_refuses_the_request_that_would_exceed_it(metered, data_dir):
    audio = (data_dir / "hello.wav").read_bytes()  # 4.4 s of a 6 s quota
    async with _client(metered, "frugal-co", "frugal") as client:
        first = await client.post("/v1/audio/transcriptions", files={"file": ("a.wav", audio)})
        assert first.status_code == 200, first.text
        second = await client.post("/v1/audio/transcriptions", files={"file": ("a.wav", audio)})
        assert_error(second, 429)
        assert "quota" in second.json()["error"]["message"]
        assert 0 < int(second.headers["retry-after"]) <= 86400
        report = (await client.get("/v1/usage")).json()
        assert abs(report["total_seconds"] - 4.438) < 0.05  # the refused one is not counted
