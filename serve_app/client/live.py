"""Realtime client: stream audio to `/v1/realtime` and get the transcript as it is spoken.

`LiveClient.stream` sends PCM16 in 100 ms appends (a file at real-time pace, or any source
of chunks, e.g. a microphone piped in), lets the server's VAD cut turns (or commits at the
end with `vad=False`), and hands every server event to a callback while it waits for the
last transcript. It speaks the same protocol as OpenAI's realtime transcription sessions.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, BinaryIO

import av
import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

RATE = 24000  # OpenAI's audio/pcm rate
STEP_S = 0.1
TRAILING_SILENCE_S = 1.0  # lets the server VAD end the last turn
Event = dict[str, Any]


def realtime_url(base_url: str) -> str:
    """http(s)://host:port[/prefix] → ws(s)://host:port[/prefix]/v1/realtime."""
    url = base_url.rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if url.startswith(http):
            url = ws + url[len(http) :]
    return url + "/v1/realtime"


def read_pcm16(path: str | Path, rate: int = RATE) -> np.ndarray:
    """Any audio file as mono 16-bit samples at `rate` (PyAV)."""
    resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=rate)
    parts: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(parts).astype("<i2") if parts else np.zeros(0, "<i2")


async def paced(pcm: np.ndarray, rate: int = RATE, speed: float = 1.0) -> AsyncIterator[bytes]:
    """`pcm` in 100 ms pieces at `speed` x real time (0: as fast as possible)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    step = int(rate * STEP_S)
    for n, start in enumerate(range(0, pcm.size, step)):
        yield pcm[start : start + step].astype("<i2").tobytes()
        if speed > 0:
            await asyncio.sleep(max(0.0, started + (n + 1) * STEP_S / speed - loop.time()))


async def raw_stream(source: BinaryIO, rate: int = RATE) -> AsyncIterator[bytes]:
    """Raw s16le mono PCM from a stream as it comes (`arecord … | whisper-serve live -`)."""
    size = int(rate * STEP_S) * 2
    while True:
        data = await asyncio.to_thread(source.read, size)
        if not data:
            return
        yield data[: len(data) // 2 * 2]


class LiveClient:
    """One realtime transcription session per `stream` call."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        model: str | None = None,
        language: str | None = None,
        prompt: str | None = None,
        rate: int = RATE,
        vad: bool = True,
    ) -> None:
        self.url = realtime_url(base_url)
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.rate = rate
        transcription = {"model": model, "language": language, "prompt": prompt}
        audio_input: dict[str, Any] = {
            "format": {"type": "audio/pcm", "rate": rate},
            "transcription": {k: v for k, v in transcription.items() if v is not None},
        }
        if not vad:
            audio_input["turn_detection"] = None
        self.session = {"type": "transcription", "audio": {"input": audio_input}}

    async def stream(
        self,
        chunks: AsyncIterator[bytes],
        on_event: Callable[[Event], None] | None = None,
        *,
        timeout_s: float = 120.0,
    ) -> list[str]:
        """Send `chunks` (PCM16 at the client's rate); returns the turns' transcripts in order.

        Every server event goes to `on_event` as it arrives. At the end of the audio a second
        of silence ends the last turn, a turn still open is committed, and the call waits (up
        to `timeout_s`) for every committed turn's transcript.
        """
        notify = on_event or (lambda _event: None)
        async with connect(self.url, additional_headers=self.headers, max_size=None) as ws:
            state = _State()
            reader = asyncio.ensure_future(_read(ws, state, notify))
            try:
                await _send(ws, type="session.update", session=self.session)
                await asyncio.wait_for(state.wait(lambda: state.updates or state.errors), 30)
                if not state.updates:
                    raise LiveError(f"the session was refused: {state.errors[0]}")
                async for chunk in chunks:
                    await _append(ws, chunk)
                silence = np.zeros(int(self.rate * TRAILING_SILENCE_S), "<i2").tobytes()
                await _append(ws, silence)
                # An empty update is answered after the events of every earlier message.
                updates = state.updates
                await _send(ws, type="session.update", session={"type": "transcription"})
                await asyncio.wait_for(state.wait(lambda: state.updates > updates), timeout_s)
                if state.open_turn or not state.vad:
                    await _send(ws, type="input_audio_buffer.commit")
                await asyncio.wait_for(state.wait(state.all_done), timeout_s)
            finally:
                reader.cancel()
        return [state.transcripts[item] for item in state.order if item in state.transcripts]

    def stream_file(
        self,
        path: str | Path,
        on_event: Callable[[Event], None] | None = None,
        *,
        speed: float = 1.0,
    ) -> list[str]:
        """A file at `speed` x real time (blocking; runs its own event loop)."""
        pcm = read_pcm16(path, self.rate)
        return asyncio.run(self.stream(paced(pcm, self.rate, speed), on_event))


class LiveError(RuntimeError):
    """The service refused the session (its settings, the key, a limit)."""


class _State:
    def __init__(self) -> None:
        self.order: list[str] = []  # committed items
        self.transcripts: dict[str, str] = {}
        self.failed: set[str] = set()
        self.open_turn = False
        self.vad = True
        self.updates = 0
        self.errors: list[str] = []
        self.closed = asyncio.Event()
        self.progress = asyncio.Event()

    def all_done(self) -> bool:
        return all(i in self.transcripts or i in self.failed for i in self.order)

    async def wait(self, condition: Callable[[], object]) -> None:
        """Until `condition()` holds or the server closed the session."""
        while not condition() and not self.closed.is_set():
            self.progress.clear()
            await self.progress.wait()

    def see(self, event: Event) -> None:
        kind = event.get("type")
        if kind in ("session.created", "session.updated"):
            detection = event["session"]["audio"]["input"].get("turn_detection")
            self.vad = detection is not None
            self.updates += kind == "session.updated"
        elif kind == "input_audio_buffer.speech_started":
            self.open_turn = True
        elif kind == "input_audio_buffer.speech_stopped":
            self.open_turn = False
        elif kind == "input_audio_buffer.committed":
            self.order.append(event["item_id"])
            self.open_turn = False
        elif kind == "conversation.item.input_audio_transcription.completed":
            self.transcripts[event["item_id"]] = event["transcript"]
        elif kind == "conversation.item.input_audio_transcription.failed":
            self.failed.add(event["item_id"])
        elif kind == "error":
            self.errors.append(str(event.get("error", {}).get("message", event)))
        self.progress.set()


async def _read(ws: ClientConnection, state: _State, notify: Callable[[Event], None]) -> None:
    try:
        async for message in ws:
            event = json.loads(message)
            state.see(event)
            notify(event)
    except ConnectionClosed:
        pass
    finally:
        state.closed.set()
        state.progress.set()


async def _send(ws: ClientConnection, **event: Any) -> None:
    await ws.send(json.dumps(event))


async def _append(ws: ClientConnection, pcm: bytes) -> None:
    await _send(ws, type="input_audio_buffer.append", audio=base64.b64encode(pcm).decode())


def print_events(out: Any = None, err: Any = None, *, raw: bool = False) -> Callable[[Event], None]:
    """An `on_event` that prints deltas as they come and each finished turn on its own line."""
    out = out or sys.stdout
    err = err or sys.stderr

    def show(event: Event) -> None:
        kind = event.get("type", "")
        if raw:
            print(json.dumps(event), file=out, flush=True)
        elif kind.endswith("input_audio_transcription.delta"):
            print(event["delta"], end="", file=out, flush=True)
        elif kind.endswith("input_audio_transcription.completed") and event["transcript"]:
            print(file=out, flush=True)
        elif kind.endswith("input_audio_transcription.failed") or kind == "error":
            print(f"error: {event['error']['message']}", file=err, flush=True)

    return show
