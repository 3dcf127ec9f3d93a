"""Window packing: several short chunks of one tenant share one 30 s Whisper window.

Whisper encodes every input as a full 30 s window, so a 5 s clip costs as much encoder work
as 30 s of speech. Packing lays short clips end to end with silence between them and
encodes the window once; each clip then gets its own decoder row over that encoding
(`serve_app.window_decode`), and keeps the words whose mid-time falls inside it, re-timed
to the clip. Clips of different tenants never share a window: the encoder mixes the whole
window, and a decoder row may read on into its neighbour's speech before it is cut.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import ceil

import numpy as np

from serve_app.config import PackingSettings
from serve_app.results import ChunkRequest, Segment, Word

FRAMES_PER_SECOND = 100  # log-mel frames
N_FRAMES = 3000  # one 30 s window
ENCODER_FRAME_S = 0.02


@dataclass
class Window:
    """One decoder input: a single chunk, or several packed clips with their spans."""

    items: list[int]  # indices into the batch
    starts: list[float]  # where each clip starts inside the window (seconds)

    @property
    def packed(self) -> bool:
        return len(self.items) > 1


def packable(item: ChunkRequest, settings: PackingSettings) -> bool:
    return item.packable and item.duration <= settings.max_clip_s


def slot_cost(item: ChunkRequest, settings: PackingSettings) -> float:
    """Share of a window an item will use: what the batcher fills batches by."""
    if not packable(item, settings):
        return 1.0
    return min(1.0, (item.duration + settings.gap_s) / settings.window_s)


def plan_windows(items: Sequence[ChunkRequest], settings: PackingSettings) -> list[Window]:
    """First-fit in arrival order, per tenant; unpackable chunks get a window each."""
    windows: list[Window] = []
    open_window: dict[str, tuple[Window, float]] = {}  # tenant -> (window, used seconds)
    for index, item in enumerate(items):
        if not packable(item, settings):
            windows.append(Window([index], [0.0]))
            continue
        current = open_window.get(item.tenant)
        if current is not None:
            window, used = current
            start = _frame_aligned(used + settings.gap_s)
            if start + item.duration <= settings.window_s:
                window.items.append(index)
                window.starts.append(start)
                open_window[item.tenant] = (window, start + item.duration)
                continue
        window = Window([index], [0.0])
        windows.append(window)
        open_window[item.tenant] = (window, item.duration)
    return windows


def window_features(
    window: Window, items: Sequence[ChunkRequest], features: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """The window's log-mel input: each clip's own features at its start, padding elsewhere.

    Each clip is featurised alone, as it would be unpacked: Whisper normalises a log-mel
    spectrogram against its loudest frame, so featurising the joined audio would rescale
    a quiet clip against a loud neighbour. Outside the clips the value is the zero that
    `pad_or_trim` pads a lone clip's window with.
    """
    parts = [
        (round(start * FRAMES_PER_SECOND), features(items[i].audio))
        for i, start in zip(window.items, window.starts, strict=True)
    ]
    mels = np.zeros((parts[0][1].shape[0], N_FRAMES), dtype=np.float32)
    for column, part in parts:
        width = min(part.shape[1], N_FRAMES - column)
        mels[:, column : column + width] = part[:, :width]
    return mels


def _frame_aligned(seconds: float) -> float:
    # Starts on an encoder frame (20 ms), so a clip's features line up with whole frames.
    return ceil(round(seconds / ENCODER_FRAME_S, 6)) * ENCODER_FRAME_S


def clip_segments(
    segments: Sequence[dict],
    window: Window,
    position: int,
    items: Sequence[ChunkRequest],
    gap_s: float,
    keep_words: bool,
) -> list[Segment]:
    """One clip's segments, re-timed to the clip, from its decoder row over the window.

    Only words whose mid-time lies in the clip's span (half a gap either side) are kept, so
    a row that ran on into the next clip cannot give this clip that clip's words.
    """
    index, start = window.items[position], window.starts[position]
    item = items[index]
    low, high = start - gap_s / 2, start + item.duration + gap_s / 2
    out: list[Segment] = []
    for seg in segments:
        words = [
            Word(
                start=round(item.offset + _clamp(word["start"] - start, item.duration), 2),
                end=round(item.offset + _clamp(word["end"] - start, item.duration), 2),
                word=word["word"],
                probability=float(word["probability"]),
            )
            for word in seg.get("words") or []
            if low <= (word["start"] + word["end"]) / 2 < high
        ]
        if not words:
            continue
        complete = len(words) == len(seg["words"])
        out.append(
            Segment(
                id=0,
                seek=int(item.offset * 100),
                start=words[0].start,
                end=words[-1].end,
                text="".join(w.word for w in words),
                tokens=list(seg["tokens"]) if complete else [],
                avg_logprob=float(seg["avg_logprob"]),
                compression_ratio=float(seg["compression_ratio"]),
                no_speech_prob=float(seg["no_speech_prob"]),
                temperature=item.options.temperature,
                words=words if keep_words else None,
            )
        )
    return out


def _clamp(t: float, duration: float) -> float:
    return min(max(t, 0.0), duration)
