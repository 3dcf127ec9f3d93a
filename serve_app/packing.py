"""Window packing: several short chunks of one tenant share one 30 s Whisper window.

Whisper encodes every input as a full 30 s window, so a 5 s clip costs as much encoder work
as 30 s of speech. Packing lays short clips end to end with silence between them, decodes
the window once with word timestamps, and gives each clip back the words whose mid-time
falls inside it — with times relative to the clip. Clips of different tenants never share a
window: the decoder's context would carry one tenant's speech into another's transcript.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from serve_app.config import PackingSettings
from serve_app.results import ChunkRequest, Segment, Word

SAMPLE_RATE = 16000


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
            start = used + settings.gap_s
            if start + item.duration <= settings.window_s:
                window.items.append(index)
                window.starts.append(start)
                open_window[item.tenant] = (window, start + item.duration)
                continue
        window = Window([index], [0.0])
        windows.append(window)
        open_window[item.tenant] = (window, item.duration)
    return windows


def window_audio(window: Window, items: Sequence[ChunkRequest]) -> np.ndarray:
    """Clips laid out at their start times, silence in between."""
    end = max(s + items[i].duration for i, s in zip(window.items, window.starts, strict=True))
    audio = np.zeros(round(end * SAMPLE_RATE) + 1, dtype=np.float32)
    for index, start in zip(window.items, window.starts, strict=True):
        clip = items[index].audio
        offset = round(start * SAMPLE_RATE)
        audio[offset : offset + clip.shape[0]] = clip[: audio.shape[0] - offset]
    return audio


def split_window(
    segments: Sequence[dict],
    window: Window,
    items: Sequence[ChunkRequest],
    gap_s: float,
    keep_words: bool,
) -> list[list[Segment]]:
    """Give each clip the words whose mid-time lies in its span, re-timed to the clip."""
    spans = [
        (start, start + items[i].duration)
        for i, start in zip(window.items, window.starts, strict=True)
    ]
    out: list[list[Segment]] = [[] for _ in window.items]
    for seg in segments:
        per_clip: list[list[Word]] = [[] for _ in window.items]
        for word in seg.get("words") or []:
            middle = (word["start"] + word["end"]) / 2
            clip = _clip_of(middle, spans, gap_s)
            start, _end = spans[clip]
            item = items[window.items[clip]]
            per_clip[clip].append(
                Word(
                    start=round(item.offset + _clamp(word["start"] - start, item.duration), 2),
                    end=round(item.offset + _clamp(word["end"] - start, item.duration), 2),
                    word=word["word"],
                    probability=float(word["probability"]),
                )
            )
        for clip, words in enumerate(per_clip):
            if not words:
                continue
            item = items[window.items[clip]]
            out[clip].append(
                Segment(
                    id=0,
                    seek=int(item.offset * 100),
                    start=words[0].start,
                    end=words[-1].end,
                    text="".join(w.word for w in words),
                    tokens=[],  # tokens belong to the shared window, not to one clip
                    avg_logprob=float(seg["avg_logprob"]),
                    compression_ratio=float(seg["compression_ratio"]),
                    no_speech_prob=float(seg["no_speech_prob"]),
                    temperature=item.options.temperature,
                    words=words if keep_words else None,
                )
            )
    return out


def _clip_of(t: float, spans: list[tuple[float, float]], gap_s: float) -> int:
    half = gap_s / 2
    for clip, (start, end) in enumerate(spans):
        if start - half <= t < end + half:
            return clip
    return 0 if t < spans[0][0] else len(spans) - 1


def _clamp(t: float, duration: float) -> float:
    return min(max(t, 0.0), duration)
