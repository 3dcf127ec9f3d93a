"""SpeakerEmbedder: the GE2E voice encoder as its own Ray Serve deployment (wiring only).

Calls from every request (sync, handle, job) are gathered by `serve.batch`, so their
clips run through the LSTM as one batch; batch size and wait come from the config.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

from serve_app.config import SpeakerEmbedderConfig
from serve_app.inference.speaker import SpeakerReplica
from serve_app.pipeline.priority import lower_cpu_priority

logger = logging.getLogger("ray.serve")


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=16)
class SpeakerEmbedder:
    """Holds one `SpeakerReplica`; `embed` takes a list of clips, returns (n, 256)."""

    def __init__(self, config: SpeakerEmbedderConfig) -> None:
        lower_cpu_priority(config.nice)
        self.replica = SpeakerReplica(Path(config.weights) if config.weights else None)
        batched: Any = self._embed_batch  # serve.batch's wrapper: typed as the function
        batched.set_max_batch_size(config.max_batch_size)
        batched.set_batch_wait_timeout_s(config.batch_wait_timeout_s)
        logger.info("SpeakerEmbedder ready (GE2E on onnxruntime, batch %d)", config.max_batch_size)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _embed_batch(self, requests: list[list[np.ndarray]]) -> list[np.ndarray]:
        # The encoder releases the GIL (onnxruntime, numpy): off the event loop.
        return await asyncio.to_thread(self.replica.embed_many, requests)

    async def embed(self, clips: list[np.ndarray]) -> np.ndarray:
        if not clips:
            return np.zeros((0, 256), np.float32)
        result: np.ndarray = await self._embed_batch(clips)
        return result

    async def stats(self) -> dict[str, object]:
        return {"batches": self.replica.batches, "batch_sizes": self.replica.batch_sizes[-100:]}
