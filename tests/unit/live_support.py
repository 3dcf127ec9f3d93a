"""Helpers of the streaming and realtime tests: a scripted model client, a real socket server
in the test's event loop, and generated speech."""

from __future__ import annotations

import asyncio
import hashlib
import io
import subprocess
import time
import wave
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import uvicorn
from fastapi import FastAPI

from serve_app.errors import InferenceFailed
from serve_app.inference.protocol import ChunkRequest, ChunkResult
from serve_app.testing import LocalModelClient, LocalStack
from tests.conftest import free_port


@dataclass
class Finished:
    index: int
    at: float  # time.monotonic() when its result came back
    request: ChunkRequest
    result: ChunkResult


class ScriptedModelClient(LocalModelClient):
    """The stack's model client, with chunks delayed or failed by index, and a record.

    `delay[i]`: seconds chunk i waits before it is queued, `late[i]`: seconds its result
    waits before it is returned (either way later chunks finish first);
    chunks in `fail` wait until every earlier chunk of their request has finished, then
    fail with `InferenceFailed` (as a crashed replica would report it); `hold`: seconds
    every chunk waits before it is queued (a slow queue), and `delay_for(chunk)` more;
    cancellations are counted in `cancelled`. Creating one replaces the stack service's
    client for `model`.
    """

    def __init__(
        self,
        stack: LocalStack,
        model: str = "tiny.en",
        *,
        delay: dict[int, float] | None = None,
        late: dict[int, float] | None = None,
        fail: set[int] | None = None,
        hold: float = 0.0,
        delay_for: Callable[[ChunkRequest], float] | None = None,
    ) -> None:
        super().__init__(stack.replicas[model])
        self.delay = delay or {}
        self.late = late or {}
        self.fail = fail or set()
        self.hold = hold
        self.delay_for = delay_for or (lambda _chunk: 0.0)
        self.started = 0  # chunks that reached this client
        self.finished: list[Finished] = []
        self.cancelled = 0
        self._progress = asyncio.Condition()
        stack.service.models[model] = self

    async def transcribe_chunk(self, chunk: ChunkRequest) -> ChunkResult:
        self.started += 1
        try:
            wait = self.hold + self.delay_for(chunk) + self.delay.get(chunk.index, 0.0)
            await asyncio.sleep(wait)
            if chunk.index in self.fail:
                async with self._progress:
                    await self._progress.wait_for(lambda: self._done_before(chunk))
                raise InferenceFailed("the model failed on this batch: injected by the test")
            result = await super().transcribe_chunk(chunk)
            await asyncio.sleep(self.late.get(chunk.index, 0.0))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.finished.append(Finished(chunk.index, time.monotonic(), chunk, result))
        async with self._progress:
            self._progress.notify_all()
        return result

    def _done_before(self, chunk: ChunkRequest) -> bool:
        done = {f.index for f in self.finished if f.request.request_id == chunk.request_id}
        return set(range(chunk.index)) <= done


_SYNC_TEXTS: dict[tuple[str, str], str] = {}


async def sync_text(stack: LocalStack, audio: bytes, key: str | None = None) -> str:
    """The non-streamed transcript (POST /v1/audio/transcriptions) of `audio`.

    Remembered for the session by the audio's hash: every stack shares the one replica, and
    a transcript of the same audio with the same options does not change.
    """
    memo = (hashlib.sha1(audio).hexdigest(), stack.config.models[0].name)
    if memo not in _SYNC_TEXTS:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with stack.http(headers) as http:
            files = {"file": ("a.wav", audio)}
            response = await http.post("/v1/audio/transcriptions", files=files)
        assert response.status_code == 200, response.text
        _SYNC_TEXTS[memo] = response.json()["text"]
    return _SYNC_TEXTS[memo]


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on a loopback port, in this event loop; yields ws://host:port.

    The stack's replica batcher lives in the test's event loop, so the server must too.
    """
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        ws="websockets-sansio",
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done():
            task.result()  # raises what went wrong
        if time.monotonic() > deadline:
            raise TimeoutError("uvicorn did not start")
        await asyncio.sleep(0.01)
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def wav_bytes(samples: np.ndarray, rate: int = 16000) -> bytes:
    """float32 [-1, 1] (or int16) samples as a mono 16-bit WAV file."""
    pcm = samples if samples.dtype == np.int16 else pcm16(samples)
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.astype("<i2").tobytes())
    return out.getvalue()


def pcm16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")


def say(out_dir: Path, name: str, text: str, voice: str = "en-us", rate: int = 24000) -> Path:
    """espeak-ng speech as a 16-bit mono WAV at `rate` (cached in `out_dir` by name)."""
    path = out_dir / f"{name}-{rate}.wav"
    if not path.is_file():
        raw = out_dir / f"{name}.raw.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(path)],
            check=True,
            capture_output=True,
        )
    return path


def read_pcm(path: Path) -> tuple[np.ndarray, int]:
    """int16 samples and the rate of a mono 16-bit WAV."""
    with wave.open(str(path), "rb") as wav:
        assert wav.getnchannels() == 1 and wav.getsampwidth() == 2
        rate = wav.getframerate()
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2"), rate
