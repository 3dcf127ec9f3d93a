"""Slow and stalled clients (issue 16), over real sockets to uvicorn (the server Ray Serve's
proxy runs) serving the app: an idle body gets 408 and frees its slot, a client's concurrent
uploads are capped (429), and probes and normal requests keep being answered meanwhile."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from serve_app.config import AppConfig
from serve_app.inference.replica import ModelReplica
from serve_app.testing import LocalStack
from tests.unit.conftest import LOOP, TINY
from tests.unit.live_support import serving

pytestmark = [LOOP, pytest.mark.integration]

IDLE_S = 1.0
MAX_UPLOADS = 3


@pytest.fixture
async def base_url(tiny: ModelReplica, tmp_path: Path) -> AsyncIterator[str]:
    config = AppConfig(
        models=[TINY],
        storage={
            "database_url": f"sqlite:///{tmp_path}/jobs.db",
            "blob_url": f"file://{tmp_path}/blobs",
        },
        jobs={"enabled": False},
        limits={
            "decode_workers": 1,
            "body_idle_timeout_s": IDLE_S,
            "max_concurrent_uploads": MAX_UPLOADS,
        },
    )
    async with LocalStack(config, replicas={"tiny.en": tiny}) as stack, serving(stack.app) as ws:
        yield ws.replace("ws://", "http://")


async def _stalled_upload(base_url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Headers promising 1 MB of multipart body, 1 kB of it, then nothing."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        "POST /v1/audio/transcriptions HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        "Content-Type: multipart/form-data; boundary=xx\r\n"
        "Content-Length: 1000000\r\n\r\n"
    )
    part = '--xx\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    writer.write(head.encode() + part.encode() + b"\0" * 1000)
    await writer.drain()
    return reader, writer


async def _status(reader: asyncio.StreamReader, timeout: float) -> tuple[int, dict]:
    raw = await asyncio.wait_for(reader.read(65536), timeout)
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head else 0
    return status, json.loads(body) if body.startswith(b"{") else {}


async def test_an_idle_body_gets_408_and_frees_its_slot(base_url: str, data_dir: Path) -> None:
    reader, writer = await _stalled_upload(base_url)
    started = time.monotonic()
    try:
        status, body = await _status(reader, timeout=IDLE_S + 5)
    finally:
        writer.close()
    assert status == 408, body
    assert body["error"]["code"] == "request_timeout"
    assert time.monotonic() - started < IDLE_S + 3
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        audio = (data_dir / "hello.wav").read_bytes()
        reply = await client.post("/v1/audio/transcriptions", files={"file": ("a.wav", audio)})
        assert reply.status_code == 200, reply.text


async def test_concurrent_uploads_are_capped_and_probes_still_answer(base_url: str) -> None:
    stalled = [await _stalled_upload(base_url) for _ in range(MAX_UPLOADS)]
    try:
        await asyncio.sleep(0.2)
        async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
            extra = await client.post(
                "/v1/audio/transcriptions", files={"file": ("a.wav", b"\0" * 1000)}
            )
            assert extra.status_code == 429, extra.text
            assert extra.json()["error"]["code"] == "rate_limited"
            assert extra.headers["retry-after"]
            for path in ("/healthz", "/readyz"):
                probe = await client.get(path)
                assert probe.status_code == 200, probe.text
        for reader, _ in stalled:  # each one ends in a 408 of its own
            status, _ = await _status(reader, timeout=IDLE_S + 5)
            assert status == 408
    finally:
        for _, writer in stalled:
            writer.close()
