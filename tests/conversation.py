"""Generated conversations for the diarization tests: espeak-ng voices taking turns.

Voices are chosen to be far apart for the GE2E encoder (en-us, en-us+f5, en+Michael,
en-029+Andy measure 0.42-0.64 cosine between voices on 1.6 s windows, 0.80-0.86 within).
"""

from __future__ import annotations

import io
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 16000
_FLOAT32 = ("-e", "float", "-b", "32")
VOICES = ("en-us", "en-us+f5", "en+Michael", "en-029+Andy")
SENTENCES = (
    "The weather stays warm and sunny all week long.",
    "Numbers like seven hundred and twelve are read aloud slowly.",
    "We talk about trains, kitchens and the river near the old town.",
    "Please send the report to the team before the meeting on Friday.",
    "The market opens early and closes when the last stall is empty.",
    "A small boat crossed the lake while the children watched from the hill.",
    "Coffee tastes better when the beans are ground just before brewing.",
    "The library keeps old maps of the city in a room upstairs.",
    "Our train was late, so we walked along the river to the station.",
    "She planted tomatoes, beans and a row of yellow flowers in the garden.",
)


@dataclass(frozen=True)
class Turn:
    speaker: str
    start: float
    end: float
    text: str


def speak(voice: str, text: str, speed: int = 160) -> np.ndarray:
    """espeak-ng speech as 16 kHz float32 mono (sox resamples from espeak's 22.05 kHz)."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
        check=True,
        capture_output=True,
    ).stdout
    raw = subprocess.run(
        ["sox", "-t", "wav", "-", "-t", "raw", "-r", str(RATE), "-c", "1", *_FLOAT32, "-"],
        input=wav,
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, np.float32).copy()


def _trim(samples: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    loud = np.flatnonzero(np.abs(samples) > threshold)
    return samples[loud[0] : loud[-1] + 1] if loud.size else samples


def conversation(
    script: list[tuple[int, int]], gaps: list[float], voices: tuple[str, ...] = VOICES
) -> tuple[np.ndarray, list[Turn]]:
    """Turns (voice index, sentence index) with the given silences before each turn after
    the first; returns the audio and the reference turns (speaker = the voice name)."""
    parts: list[np.ndarray] = [np.zeros(int(0.5 * RATE), np.float32)]
    turns: list[Turn] = []
    t = 0.5
    for n, (voice, sentence) in enumerate(script):
        if n:
            parts.append(np.zeros(int(gaps[n - 1] * RATE), np.float32))
            t += int(gaps[n - 1] * RATE) / RATE
        speech = _trim(speak(voices[voice], SENTENCES[sentence]))
        parts.append(speech)
        turns.append(Turn(voices[voice], t, t + speech.size / RATE, SENTENCES[sentence]))
        t += speech.size / RATE
    parts.append(np.zeros(int(0.5 * RATE), np.float32))
    return np.concatenate(parts), turns


def wav_bytes(samples: np.ndarray, channels: int = 1) -> bytes:
    """16-bit WAV of (n,) mono or (n, channels) samples."""
    data = samples.reshape(-1, channels) if samples.ndim == 1 else samples
    pcm = (np.clip(data, -1, 1) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(data.shape[1])
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def save(path: Path, samples: np.ndarray) -> Path:
    path.write_bytes(wav_bytes(samples))
    return path
