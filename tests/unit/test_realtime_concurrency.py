"""`/v1/realtime`: many sessions at once share batches and match the sync results."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serve_app.options import LIVE_PRIORITY
from serve_app.security.keys import create_key
from tests.text import wer
from tests.unit.conftest import LOOP
from tests.unit.live_support import (
    ScriptedModelClient,
    read_pcm,
    say,
    serving,
    sync_text,
    wav_bytes,
)
from tests.unit.realtime_client import session

pytestmark = LOOP


# ---- many sessions at once -----------------------------------------------------------------

SPEAKERS = [
    ("en-us", "The meeting has been moved to Thursday afternoon."),
    ("en-gb", "Please remember to water the plants before you leave."),
    ("en-us+f3", "Our flight was delayed by two hours this morning."),
    ("en-us+m3", "The library will be closed on Monday for the holiday."),
    ("en-gb+f2", "He ordered a large coffee with milk for breakfast."),
    ("en-us+f4", "The new software update fixes several bugs."),
    ("en-gb+m3", "We need three volunteers to set up the chairs."),
    ("en-us+f2", "The river flooded after a week of heavy rain."),
]


@pytest.mark.slow
async def test_eight_concurrent_sessions_share_batches_and_match_sync(make_stack, tmp_path_factory):
    stack = await make_stack(auth={"enabled": True})
    assert stack.jobs is not None
    voices = tmp_path_factory.mktemp("voices")
    clips = [say(voices, f"s{i}", text, voice) for i, (voice, text) in enumerate(SPEAKERS)]
    keys = [create_key(stack.jobs.store, f"tenant-{i}", "live")[0] for i in range(len(clips))]
    # The sync results come from other tenants, so they never share a window with a live turn.
    sync_keys = [create_key(stack.jobs.store, f"sync-{i}", "sync")[0] for i in range(len(clips))]
    recorder = ScriptedModelClient(stack)
    rate = 24000

    def stream_of(clip: Path) -> np.ndarray:
        """What a session says: 0.2 s of silence, the sentence, 1.5 s of silence."""
        pcm, clip_rate = read_pcm(clip)
        assert clip_rate == rate
        return np.concatenate([np.zeros(rate // 5, "<i2"), pcm, np.zeros(rate * 3 // 2, "<i2")])

    async def speak(key: str, audio: np.ndarray) -> list[dict[str, Any]]:
        async with session(served, key) as client:
            # server VAD with the defaults, 100 ms appends at 1x real time
            loop = asyncio.get_running_loop()
            started = loop.time()
            step = rate // 10
            for n, start in enumerate(range(0, audio.size, step)):
                await client.append(audio[start : start + step])
                await asyncio.sleep(max(0.0, started + (n + 1) * 0.1 - loop.time()))
            return await client.until("conversation.item.input_audio_transcription.completed")

    streams = [stream_of(clip) for clip in clips]
    # The sync result of the same audio (the turn begins within the 300 ms prefix padding, so
    # the live turn and the file give the VAD chunker the same samples), decoded while the
    # sessions speak (the model is idle until their turns end).
    references = asyncio.gather(
        *(sync_text(stack, wav_bytes(a, rate), k) for k, a in zip(sync_keys, streams, strict=True))
    )
    async with serving(stack.app) as served:
        results = await asyncio.gather(*(speak(k, a) for k, a in zip(keys, streams, strict=True)))
    for events, reference in zip(results, await references, strict=True):
        kinds = [e["type"] for e in events]
        assert kinds[:3] == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
        ], kinds
        assert wer(reference, events[-1]["transcript"]) <= 0.02, (reference, events[-1])
    # Turns of different sessions (tenants) were decoded in one batch.
    live = [f for f in recorder.finished if f.request.priority == LIVE_PRIORITY]
    assert sorted(f.request.tenant for f in live) == sorted(f"tenant-{i}" for i in range(8))
    batches: dict[tuple[float, int], set[str]] = {}  # chunks of one batch share its run time
    for finished in live:
        key = (finished.result.batch_s, finished.result.batch_size)
        batches.setdefault(key, set()).add(finished.request.tenant)
    assert max(len(tenants) for tenants in batches.values()) >= 2, batches
