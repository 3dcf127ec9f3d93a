"""Chunks of concurrent requests share batches, and every answer is still right."""

from __future__ import annotations

import asyncio

import httpx
import pytest

pytestmark = pytest.mark.integration

CLIPS = ["hello.wav", "weather.wav", "numbers.wav", "kitchen.wav", "train.wav"]


async def _post(client: httpx.AsyncClient, path) -> dict:
    response = await client.post(
        "/v1/audio/transcriptions",
        files={"file": (path.name, path.read_bytes())},
        data={"model": "tiny.en"},
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_concurrent_requests_share_batches(whisper_app, http, data_dir):
    expected = {
        c: http.post(
            "/v1/audio/transcriptions",
            files={"file": (c, (data_dir / c).read_bytes())},
            data={"model": "tiny.en"},
        ).json()["text"]
        for c in CLIPS
    }
    before = whisper_app.handle.stats.remote().result()["tiny.en"]

    requests = [CLIPS[i % len(CLIPS)] for i in range(12)]

    async def fire() -> list[dict]:
        async with httpx.AsyncClient(base_url=whisper_app.url, timeout=300) as client:
            return await asyncio.gather(*(_post(client, data_dir / c) for c in requests))

    results = asyncio.run(fire())
    for clip, body in zip(requests, results, strict=True):
        assert body["text"] == expected[clip], clip

    after = whisper_app.handle.stats.remote().result()["tiny.en"]
    new_batches = {
        size: count - before.batch_sizes.get(size, 0) for size, count in after.batch_sizes.items()
    }
    shared = {size: n for size, n in new_batches.items() if size > 1 and n > 0}
    assert shared, f"no batch held chunks of more than one request: {new_batches}"
    assert sum(size * n for size, n in new_batches.items()) >= len(requests)
