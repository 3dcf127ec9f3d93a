"""Packing, step 1: plan which chunks share a 30 s window.

First-fit in arrival order, per tenant. Clips of different tenants never share a window:
the encoder mixes the whole window, and a decoder row may read on into its neighbour's
speech before it is cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import ceil

from serve_app.config import PackingSettings
from serve_app.inference.protocol import ChunkRequest

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
    return item.pack and item.duration <= settings.max_clip_s


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


def _frame_aligned(seconds: float) -> float:
    # Starts on an encoder frame (20 ms), so a clip's features line up with whole frames.
    return ceil(round(seconds / ENCODER_FRAME_S, 6)) * ENCODER_FRAME_S
