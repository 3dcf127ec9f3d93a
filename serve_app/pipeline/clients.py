"""`ModelClient` over a Ray Serve handle: the ingress and the tracker reach replicas here.

Ray's failures become service errors at this boundary: a replica that died (crash,
scale-down, node loss) is `BackendUnavailable`, and a chunk is retried on another replica
first, since decoding a chunk is idempotent. While no replica can take a call (the only one
is restarting), the ingress waits at most `ingress.replica_wait_s` for one (`ReplicaWait`);
the tracker waits for as long as the restart takes, since its jobs must not fail over it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator

from serve_app.errors import BackendUnavailable
from serve_app.inference.protocol import ChunkRequest, ChunkResult, ReplicaInfo, ReplicaStats
from serve_app.results import LanguageGuess

logger = logging.getLogger("ray.serve")

# What `handle.method.remote()` is typed as; every method called here is unary.
Response = DeploymentResponse[Any] | DeploymentResponseGenerator[Any]
_CHUNK_RETRIES = 2


class ReplicaWait:
    """Bounds how long a call of one deployment waits to be *assigned* to a replica.

    Serve's router queues a call until a replica takes it; with every replica dead that is
    the whole restart. Only the assignment is bounded, never the call on the replica: a chunk
    queued in a busy batcher is on a replica already. A call that waits at the router behind
    full replicas (`max_ongoing_requests`) is not cut off either, as long as this client sees
    its deployment make progress: a call assigned or answered within the last `wait_s`, or
    one on a replica right now. `wait_s` None waits without bound (the tracker's).
    Checked against Ray Serve 2.60's router: the assignment future resolves only after a
    replica accepted the call, and cancelling it removes the call from the router's queue.
    """

    def __init__(self, wait_s: float | None, what: str, unavailable: str | None = None) -> None:
        self.wait_s = wait_s
        self.what = what
        # What a caller gets when the replica died under every attempt.
        self.unavailable = unavailable or f"the {what} replica is unavailable; retry"
        self._progress = -math.inf  # monotonic time of the last assignment or answer
        self._on_replica = 0

    def _busy(self) -> bool:
        assert self.wait_s is not None
        return self._on_replica > 0 or time.monotonic() - self._progress < self.wait_s

    async def call(self, sent: Response) -> Any:
        response = cast(DeploymentResponse[Any], sent)
        if self.wait_s is None or not response.by_reference:
            return await response  # a gRPC handle (RAY_SERVE_THROUGHPUT_OPTIMIZED) has no ref
        ref = await self._assigned(response)
        self._on_replica += 1
        try:
            result = await ref
        except asyncio.CancelledError:
            response.cancel()  # the caller left: stop the call on the replica too
            raise
        finally:
            self._on_replica -= 1
        self._progress = time.monotonic()
        return result

    async def retrying(
        self, send: Callable[[], Response], what: str, retries: int = _CHUNK_RETRIES
    ) -> Any:
        """`call(send())`, sent again (up to `retries` times) when the replica died under it:
        the work is idempotent and a restarted replica takes it. Then `BackendUnavailable`."""
        for attempt in range(retries + 1):
            try:
                return await self.call(send())
            except RayActorError as exc:
                if attempt == retries:
                    raise BackendUnavailable(self.unavailable) from exc
                logger.warning("%s replica died during %s; retrying", self.what, what)
                await asyncio.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _assigned(self, response: DeploymentResponse[Any]) -> Any:
        assert self.wait_s is not None
        # `_to_object_ref` resolves once the router has handed the call to a replica.
        pending = asyncio.ensure_future(response._to_object_ref())
        try:
            while True:
                done, _ = await asyncio.wait({pending}, timeout=self.wait_s)
                if done:
                    self._progress = time.monotonic()
                    return pending.result()
                if not self._busy():
                    break
        except asyncio.CancelledError:
            pending.cancel()
            response.cancel()
            raise
        # Cancelling a pending assignment takes the call out of the router's queue.
        pending.cancel()
        response.cancel()
        logger.warning("no %s replica took a call within %.1f s", self.what, self.wait_s)
        raise BackendUnavailable(
            f"no {self.what} replica is available (restarting?); retry",
            headers={"Retry-After": "1"},
        )


class RayModelClient:
    """The `ModelClient` of one Transcriber deployment."""

    def __init__(self, handle: DeploymentHandle, replica_wait_s: float | None = None) -> None:
        self.handle = handle
        self.wait = ReplicaWait(replica_wait_s, "model")

    async def transcribe_chunk(self, chunk: ChunkRequest) -> ChunkResult:
        result: ChunkResult = await self.wait.retrying(
            lambda: self.handle.transcribe_chunk.remote(chunk), f"chunk {chunk.index}"
        )
        return result

    async def detect_language(self, chunks: Sequence[np.ndarray]) -> LanguageGuess:
        result: LanguageGuess = await self.wait.retrying(
            lambda: self.handle.detect_language.remote(list(chunks)), "language detection", 0
        )
        return result

    async def describe(self) -> ReplicaInfo:
        result: ReplicaInfo = await self.wait.retrying(self.handle.describe.remote, "describe", 0)
        return result

    async def stats(self) -> ReplicaStats:
        result: ReplicaStats = await self.wait.retrying(self.handle.stats.remote, "stats", 0)
        return result


def ray_clients(
    handles: dict[str, DeploymentHandle], replica_wait_s: float | None = None
) -> dict[str, RayModelClient]:
    return {name: RayModelClient(handle, replica_wait_s) for name, handle in handles.items()}


class RaySpeakerClient:
    """The `SpeakerClient` of the SpeakerEmbedder deployment."""

    def __init__(self, handle: DeploymentHandle, replica_wait_s: float | None = None) -> None:
        self.handle = handle
        self.wait = ReplicaWait(
            replica_wait_s, "speaker embedder", "the speaker embedder is unavailable; retry"
        )

    async def embed(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        result: np.ndarray = await self.wait.retrying(
            lambda: self.handle.embed.remote(list(clips)), f"{len(clips)} clips"
        )
        return result
