"""`ModelClient` over a Ray Serve handle: the ingress and the tracker reach replicas here.

Ray's failures become service errors at this boundary: a replica that died (crash,
scale-down, node loss) is `BackendUnavailable`, and a chunk is retried on another replica
first, since decoding a chunk is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import TypeVar

import numpy as np
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from serve_app.errors import BackendUnavailable, ServiceError
from serve_app.inference.protocol import ChunkRequest, ChunkResult, ReplicaInfo, ReplicaStats
from serve_app.results import LanguageGuess

logger = logging.getLogger("ray.serve")

T = TypeVar("T")
_CHUNK_RETRIES = 2


class RayModelClient:
    """The `ModelClient` of one Transcriber deployment."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self.handle = handle

    async def transcribe_chunk(self, chunk: ChunkRequest) -> ChunkResult:
        for attempt in range(_CHUNK_RETRIES + 1):
            try:
                result: ChunkResult = await self.handle.transcribe_chunk.remote(chunk)
                return result
            except RayActorError as exc:
                if attempt == _CHUNK_RETRIES:
                    raise BackendUnavailable("the model replica is unavailable; retry") from exc
                logger.warning("replica died during chunk %d; retrying", chunk.index)
                await asyncio.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")

    async def detect_language(self, chunks: Sequence[np.ndarray]) -> LanguageGuess:
        return await _call(self.handle.detect_language.remote(list(chunks)))

    async def describe(self) -> ReplicaInfo:
        return await _call(self.handle.describe.remote())

    async def stats(self) -> ReplicaStats:
        return await _call(self.handle.stats.remote())


async def _call(response: Awaitable[T]) -> T:
    try:
        return await response
    except ServiceError:
        raise
    except RayActorError as exc:
        raise BackendUnavailable("the model replica is unavailable; retry") from exc


def ray_clients(handles: dict[str, DeploymentHandle]) -> dict[str, RayModelClient]:
    return {name: RayModelClient(handle) for name, handle in handles.items()}


class RaySpeakerClient:
    """The `SpeakerClient` of the SpeakerEmbedder deployment."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self.handle = handle

    async def embed(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        for attempt in range(_CHUNK_RETRIES + 1):
            try:
                result: np.ndarray = await self.handle.embed.remote(list(clips))
                return result
            except RayActorError as exc:
                if attempt == _CHUNK_RETRIES:
                    raise BackendUnavailable("the speaker embedder is unavailable; retry") from exc
                await asyncio.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")
