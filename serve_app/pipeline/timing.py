"""Helpers of `TranscriptionService`: options vs model, array checks, first window, laps."""

from __future__ import annotations

import time

import numpy as np

from serve_app.errors import AudioTooLong, BadRequest, EmptyFile, TooManyChannels
from serve_app.inference.protocol import ReplicaInfo
from serve_app.options import DecodeOptions
from serve_app.pipeline.decode import SAMPLE_RATE


def validate_array(
    audio: np.ndarray, max_duration_s: float, max_channels: int | None = None
) -> np.ndarray:
    """A caller's float array checked in place: (n,) mono, or (channels, n) for multichannel."""
    if max_channels is not None and audio.ndim == 2:
        if audio.shape[0] > max_channels:
            raise TooManyChannels(
                f"the audio has {audio.shape[0]} channels; multichannel takes at most "
                f"{max_channels}"
            )
        return np.stack([validate_array(row, max_duration_s) for row in audio])
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


def fit_to_model(options: DecodeOptions, model: ReplicaInfo) -> DecodeOptions:
    """Check options against what a model can do; settles the language where it can."""
    if options.task == "translate" and not model.multilingual:
        raise BadRequest(
            "this model is English-only and cannot translate; use a multilingual model"
        )
    if options.language is not None and options.language not in model.languages:
        raise BadRequest(f"unsupported language {options.language!r} for this model")
    if not model.multilingual and options.language != "en":
        return options.with_language("en")  # faster-whisper forces English on .en models
    return options
