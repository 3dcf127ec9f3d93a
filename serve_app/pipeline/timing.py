"""Small helpers of `TranscriptionService`: array checks, the first window, phase laps."""

from __future__ import annotations

import time

import numpy as np

from serve_app.errors import AudioTooLong, BadRequest, EmptyFile
from serve_app.pipeline.decode import SAMPLE_RATE


def validate_array(audio: np.ndarray, max_duration_s: float) -> np.ndarray:
    if audio.ndim != 1:
        raise BadRequest(f"audio array must be 1-D mono, got shape {audio.shape}")
    if audio.size == 0:
        raise EmptyFile("the audio array is empty")
    if not np.issubdtype(audio.dtype, np.floating):
        raise BadRequest("audio array must be float samples in [-1, 1] at 16 kHz")
    if audio.size > max_duration_s * SAMPLE_RATE:
        raise AudioTooLong(f"audio is longer than the limit of {max_duration_s:.0f} s")
    samples = np.ascontiguousarray(audio, dtype=np.float32)
    if not np.isfinite(samples).all():
        raise BadRequest("audio array contains NaN or infinite samples")
    return samples


def first_window(chunks: list[np.ndarray]) -> list[np.ndarray]:
    """The chunks that cover the first 30 s of speech (all language detection looks at)."""
    out: list[np.ndarray] = []
    total = 0
    for chunk in chunks:
        out.append(chunk)
        total += chunk.shape[0]
        if total >= 30 * SAMPLE_RATE:
            break
    return out


class Clock:
    """Laps of one request's phases, in seconds (the request's time budget)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.monotonic()

    def lap(self, phase: str) -> float:
        now = time.monotonic()
        self.laps[phase] = round(now - self._last, 4)
        self._last = now
        return self.laps[phase]
