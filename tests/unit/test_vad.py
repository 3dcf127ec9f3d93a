"""`pipeline.vad`: faster-whisper's Silero VAD, bit for bit, in bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from faster_whisper.audio import decode_audio
from faster_whisper.vad import VadOptions, get_speech_timestamps, get_vad_model

from serve_app.pipeline.chunking import DEFAULT_VAD, plan_chunks
from serve_app.pipeline.vad import BATCH_WINDOWS, WINDOW, speech_probabilities, speech_timestamps

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    speech = decode_audio(str(DATA / "story.flac"))
    noise = np.random.default_rng(7).normal(0, 0.02, 16000 * 20).astype(np.float32)
    silence = np.zeros(16000 * 3, dtype=np.float32)
    return np.concatenate([speech, silence, speech[:12345], noise, speech])


# Lengths on and around the batch edges: a whole number of windows (faster-whisper then
# pads a full window), one window of batches, and a tail longer than the context.
CUTS = [None, WINDOW * BATCH_WINDOWS, WINDOW * BATCH_WINDOWS + 100, WINDOW * 3 * BATCH_WINDOWS - 17]


@pytest.mark.parametrize("cut", CUTS)
def test_probabilities_equal_faster_whispers(audio: np.ndarray, cut: int | None) -> None:
    clip = audio[:cut]
    padded = np.pad(clip, (0, WINDOW - clip.shape[0] % WINDOW))
    expected = get_vad_model()(padded.copy())  # it writes into its input
    np.testing.assert_array_equal(speech_probabilities(clip), expected)


@pytest.mark.parametrize(
    "options",
    [VadOptions(max_speech_duration_s=30, min_silence_duration_ms=160), VadOptions()],
    ids=["pipeline", "defaults"],
)
def test_timestamps_equal_faster_whispers(audio: np.ndarray, options: VadOptions) -> None:
    expected = get_speech_timestamps(audio, options)
    assert len(expected) > 2
    assert speech_timestamps(audio, options) == expected


def test_silence_and_tiny_inputs() -> None:
    assert speech_timestamps(np.zeros(16000 * 5, np.float32), VadOptions()) == []
    assert speech_timestamps(np.zeros(10, np.float32), VadOptions()) == []
    assert plan_chunks(np.zeros(16000, np.float32), DEFAULT_VAD).chunks == []


_PEAK = """
import json, threading, numpy as np, psutil
from serve_app.pipeline.chunking import DEFAULT_VAD, plan_chunks
audio = np.random.default_rng(1).normal(0, 0.01, 16000 * 262).astype(np.float32)
plan_chunks(audio[: 16000 * 5], DEFAULT_VAD)
base = psutil.Process().memory_info().rss
peak, done = [base], threading.Event()
def watch():
    while not done.is_set():
        peak[0] = max(peak[0], psutil.Process().memory_info().rss)
watcher = threading.Thread(target=watch)
watcher.start()
runs = [threading.Thread(target=plan_chunks, args=(audio, DEFAULT_VAD)) for _ in range(4)]
[t.start() for t in runs]
[t.join() for t in runs]
done.set()
watcher.join()
print(json.dumps((peak[0] - base) / 2**20))
"""


def test_four_long_vads_at_once_stay_small() -> None:
    """Four concurrent VADs of 262 s (an 8 MiB WAV each) took +450 MB with faster-whisper's
    10,000-window runs; 256-window runs need a few MB each."""
    out = subprocess.run(
        [sys.executable, "-c", _PEAK], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) < 80
