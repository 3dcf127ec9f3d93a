"""The whole service in one process: real replicas, tracker and HTTP app, without Ray.

The way procrastinate ships `InMemoryConnector`: `LocalModelClient` runs the very replica
code a Transcriber deployment runs (engine, batcher, packing; `LocalSpeakerClient` the
SpeakerEmbedder's), and `LocalStack` wires it
to the transcription service, the job tracker, the job front end and the FastAPI app, on
the embedded SQLite and folder stores. Unit tests drive it with httpx's ASGI transport;
a notebook can use it to try options without starting a cluster.

    async with LocalStack(config) as stack:
        async with stack.http() as client:
            reply = await client.post("/v1/audio/transcriptions", files={"file": wav})
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
import numpy as np
from fastapi import FastAPI

from serve_app.config import AppConfig, ModelConfig
from serve_app.http.app import build_http_app
from serve_app.inference.protocol import ChunkRequest, ChunkResult, ReplicaInfo, ReplicaStats
from serve_app.inference.replica import ModelReplica
from serve_app.inference.speaker import SpeakerReplica
from serve_app.inference.weights import resolve_weights, select_device
from serve_app.jobs.frontend import JobsFrontend
from serve_app.jobs.tracker import EventBatch, JobTracker
from serve_app.pipeline.service import TranscriptionService
from serve_app.results import LanguageGuess


def load_replica(model: ModelConfig, cache_dir: Path) -> ModelReplica:
    """A replica of `model` on the CPU, with weights resolved as a deployment does."""
    device = select_device("cpu", model.compute_type, [], 0)
    return ModelReplica(model, resolve_weights(model.weights_uri, cache_dir), device)


class LocalModelClient:
    """`ModelClient` that calls a `ModelReplica` in this process."""

    def __init__(self, replica: ModelReplica) -> None:
        self.replica = replica

    async def transcribe_chunk(self, chunk: ChunkRequest) -> ChunkResult:
        return await self.replica.transcribe_chunk(chunk)

    async def detect_language(self, chunks: Sequence[np.ndarray]) -> LanguageGuess:
        return await self.replica.detect_language(chunks)

    async def describe(self) -> ReplicaInfo:
        return self.replica.describe()

    async def stats(self) -> ReplicaStats:
        return self.replica.stats()


class LocalSpeakerClient:
    """`SpeakerClient` over a `SpeakerReplica` in this process (one request per batch)."""

    def __init__(self, replica: SpeakerReplica) -> None:
        self.replica = replica

    async def embed(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        return (await asyncio.to_thread(self.replica.embed_many, [list(clips)]))[0]


class LocalTrackerClient:
    """`TrackerClient` over a `JobTracker` running in this event loop."""

    def __init__(self, tracker: JobTracker) -> None:
        self.tracker = tracker

    async def wake(self) -> None:
        await self.tracker.wake()

    async def cancel(self, job_id: str) -> None:
        await self.tracker.cancel(job_id)

    async def events_since(self, job_id: str, after: int, timeout_s: float) -> EventBatch:
        return await self.tracker.events_since(job_id, after, timeout_s)

    async def check(self, timeout_s: float = 5.0) -> bool:
        return True


class LocalStack:
    """Service, tracker, job front end and HTTP app over in-process replicas.

    `replicas` maps model names to loaded `ModelReplica`s (load them once and share them
    between stacks: loading is the slow part); missing ones are loaded from the config.
    """

    def __init__(
        self,
        config: AppConfig,
        replicas: Mapping[str, ModelReplica] | None = None,
        speakers: SpeakerReplica | None = None,
    ) -> None:
        self.config = config
        given = dict(replicas or {})
        self.replicas = {
            m.name: given.get(m.name) or load_replica(m, config.cache_path) for m in config.models
        }
        self.models = {name: LocalModelClient(r) for name, r in self.replicas.items()}
        self.speakers: LocalSpeakerClient | None = None
        if config.speaker_embedder.enabled:
            self.speakers = LocalSpeakerClient(speakers or SpeakerReplica())
        self.service = TranscriptionService(config, self.models, self.speakers)
        self.tracker: JobTracker | None = None
        self.jobs: JobsFrontend | None = None
        self._app: FastAPI | None = None

    @property
    def app(self) -> FastAPI:
        if self._app is None:
            raise RuntimeError("enter the LocalStack first (async with)")
        return self._app

    async def __aenter__(self) -> Self:
        if self.config.jobs.enabled:
            self.tracker = JobTracker(self.config, self.models, speakers=self.speakers)
            self.tracker.start()
            self.jobs = JobsFrontend(self.config, self.service, LocalTrackerClient(self.tracker))
        self._app = build_http_app(self.service, self.jobs)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.tracker is not None:
            await self.tracker.stop()
            self.tracker.close()
        if self.jobs is not None:
            self.jobs.close()
        self.service.close()

    def http(self, headers: Mapping[str, str] | None = None) -> httpx.AsyncClient:
        """An httpx client that calls the app in-process (no socket)."""
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://whisper.local",
            headers=dict(headers or {}),
            timeout=120,
        )
