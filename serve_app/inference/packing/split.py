"""Packing, step 3: split a decoder row's output back into its clip's own segments."""

from __future__ import annotations

from collections.abc import Sequence

from serve_app.inference.packing.plan import Window
from serve_app.inference.protocol import ChunkRequest
from serve_app.results import Segment, Word


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
