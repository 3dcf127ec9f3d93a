"""A realtime client on a raw WebSocket and the helpers of the `/v1/realtime` tests: a
session that has seen `session.created`, a manual-commit session.update, fixture PCM and a
LiveObserver that records."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from serve_app.pipeline.decode import decode_audio
from tests.unit.live_support import pcm16


class Client:
    """A realtime client on a raw WebSocket: JSON events in and out."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, **event: Any) -> None:
        await self.ws.send(json.dumps(event))

    async def append(self, pcm: np.ndarray) -> None:
        audio = base64.b64encode(pcm.astype("<i2").tobytes()).decode()
        await self.send(type="input_audio_buffer.append", audio=audio)

    async def recv(self, timeout: float = 30) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def until(self, kind: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Events up to and including the first of type `kind`."""
        events = [await self.recv(timeout)]
        while events[-1]["type"] != kind:
            events.append(await self.recv(timeout))
        return events

    async def error(self) -> dict[str, Any]:
        event = await self.recv(10)
        assert event["type"] == "error", event
        return event["error"]


@asynccontextmanager
async def session(url: str, key: str | None = None, query: str = "") -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with connect(f"{url}/v1/realtime{query}", additional_headers=headers) as ws:
        client = Client(ws)
        created = await client.recv()
        assert created["type"] == "session.created", created
        yield client


def manual(rate: int = 16000, **transcription: Any) -> dict[str, Any]:
    """A session.update for manual commits at `rate`."""
    audio_input: dict[str, Any] = {
        "format": {"type": "audio/pcm", "rate": rate},
        "turn_detection": None,
    }
    if transcription:
        audio_input["transcription"] = transcription
    return {"type": "transcription", "audio": {"input": audio_input}}


def fixture_pcm(path: Path) -> np.ndarray:
    """A test fixture as 16 kHz PCM16 (what the file decoder sees, sample for sample)."""
    return pcm16(decode_audio(path.read_bytes(), max_duration_s=60, timeout_s=30).samples)


class Observed:
    """A LiveObserver that keeps what it was told."""

    def __init__(self) -> None:
        self.open: list[int] = []
        self.utterances: list[tuple[str, str, float]] = []

    def sessions_open(self, count: int) -> None:
        self.open.append(count)

    def utterance_done(self, model: str, outcome: str, seconds: float) -> None:
        self.utterances.append((model, outcome, seconds))
