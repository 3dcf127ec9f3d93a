"""Window packing: several short chunks of one tenant share one 30 s Whisper window.

Whisper encodes every input as a full 30 s window, so a 5 s clip costs as much encoder work
as 30 s of speech. Packing lays short clips end to end with silence between them, encodes
the window once, gives each clip its own decoder row over that encoding, and keeps the
words whose mid-time falls inside the clip, re-timed to it.

`WindowPacker` is the one interface, in three steps: `plan` (which chunks share a window,
`plan.py`), then `decode` (encoder pass and decoder rows, `decode.py`, split back per clip
by `split.py`). Everything it returns is a dataclass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import TranscriptionOptions

from serve_app.config import PackingSettings
from serve_app.inference.packing.decode import decode_packed, to_numpy, window_features
from serve_app.inference.packing.plan import (
    ENCODER_FRAME_S,
    FRAMES_PER_SECOND,
    N_FRAMES,
    Window,
    plan_windows,
    slot_cost,
)
from serve_app.inference.packing.split import clip_segments
from serve_app.inference.protocol import ChunkRequest
from serve_app.results import Segment

__all__ = [
    "ENCODER_FRAME_S",
    "FRAMES_PER_SECOND",
    "N_FRAMES",
    "PackedClip",
    "Window",
    "WindowPacker",
    "to_numpy",
]


@dataclass
class PackedClip:
    """One packed clip's result; `segments` is None when its row must be decoded alone."""

    index: int  # into the batch's items
    segments: list[Segment] | None


class WindowPacker:
    """Plans windows for a batch and decodes packed ones; `enabled=False` plans one each."""

    def __init__(self, settings: PackingSettings, *, enabled: bool) -> None:
        self.settings = settings
        self.enabled = enabled

    def cost(self, item: ChunkRequest) -> float:
        """Share of a window an item will use: what the batcher fills batches by."""
        return slot_cost(item, self.settings) if self.enabled else 1.0

    def plan(self, items: Sequence[ChunkRequest]) -> list[Window]:
        if not self.enabled:
            return [Window([i], [0.0]) for i in range(len(items))]
        return plan_windows(items, self.settings)

    def decode(
        self,
        model: WhisperModel,
        tokenizer: Tokenizer,
        windows: Sequence[Window],
        items: Sequence[ChunkRequest],
        options: TranscriptionOptions,
        *,
        keep_words: bool,
        features: Callable[[np.ndarray], np.ndarray],
        silence: np.ndarray,
    ) -> list[PackedClip]:
        """Decode packed windows; one `PackedClip` per clip, in window order.

        `options` must ask for word timestamps: a row's words are how its text is checked
        against its clip's span. `keep_words` is whether the caller wants them back.
        """
        gap_s = self.settings.gap_s
        mels = np.stack([window_features(w, items, features) for w in windows])
        decoded = decode_packed(model, tokenizer, mels, windows, items, options, gap_s, silence)
        out: list[PackedClip] = []
        for window, rows in zip(windows, decoded, strict=True):
            for position, segments in enumerate(rows):
                index = window.items[position]
                if segments is None:
                    out.append(PackedClip(index, None))
                    continue
                clip = clip_segments(segments, window, position, items, gap_s, keep_words)
                out.append(PackedClip(index, clip))
        return out
