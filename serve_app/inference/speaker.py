"""The speaker-embedding seam: `SpeakerClient` (what callers use) and `SpeakerReplica`.

A replica holds the GE2E encoder (`voice_encoder.VoiceEncoder`, its LSTM on onnxruntime:
`voice_encoder_onnx`). Its
`embed_many` takes the clips of several requests at once (the SpeakerEmbedder deployment
gathers them with `serve.batch`), so their partials run through the LSTM in one batch.
No Ray here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from serve_app.inference.voice_encoder import EMBEDDING_SIZE
from serve_app.inference.voice_encoder_onnx import OnnxVoiceEncoder


class SpeakerClient(Protocol):
    """Embeds clips of 16 kHz mono speech: one L2-normalised 256-d row per clip."""

    async def embed(self, clips: Sequence[np.ndarray]) -> np.ndarray: ...


class SpeakerReplica:
    """The encoder of one SpeakerEmbedder replica (or of an in-process test stack)."""

    def __init__(self, weights: Path | None = None) -> None:
        self.encoder = OnnxVoiceEncoder(weights)
        self.batches = 0
        self.batch_sizes: list[int] = []

    def embed_many(self, requests: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
        """One embedding matrix per request; all clips go through the encoder together."""
        flat = [clip for request in requests for clip in request]
        self.batches += 1
        self.batch_sizes.append(len(requests))
        embeddings = self.encoder.embed_clips(flat)
        out: list[np.ndarray] = []
        start = 0
        for request in requests:
            out.append(embeddings[start : start + len(request)].reshape(-1, EMBEDDING_SIZE))
            start += len(request)
        return out
