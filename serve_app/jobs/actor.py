"""The tracker as a Ray actor: one named, detached actor per cluster, and its client."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import ActorDiedError, RayActorError
from ray.serve.handle import DeploymentHandle

from serve_app.config import AppConfig
from serve_app.jobs.tracker import EventBatch, JobTracker, TrackerUnavailable
from serve_app.observability import DeletionMetrics, JobMetrics, UsageMetrics
from serve_app.pipeline.clients import RaySpeakerClient, ray_clients
from serve_app.pipeline.priority import lower_cpu_priority

logger = logging.getLogger("ray.serve")


class TrackerActor(JobTracker):
    """The actor body: Ray runs async actors' `__init__` inside their event loop."""

    def __init__(
        self,
        config: AppConfig,
        handles: dict[str, DeploymentHandle],
        speakers: DeploymentHandle | None = None,
    ) -> None:
        lower_cpu_priority(config.jobs.tracker_nice)
        # No replica_wait_s: a job's chunks wait out a replica restart instead of failing.
        super().__init__(
            config,
            ray_clients(handles, None),
            JobMetrics(),
            DeletionMetrics(),
            UsageMetrics(),
            speakers=RaySpeakerClient(speakers) if speakers is not None else None,
        )
        self.start()


def get_or_create_tracker(
    config: AppConfig,
    handles: dict[str, DeploymentHandle],
    speakers: DeploymentHandle | None = None,
) -> ActorHandle:
    """The one tracker of this cluster: named, detached, restarted forever by Ray."""
    jobs = config.jobs
    actor_cls: Any = ray.remote(TrackerActor)
    return actor_cls.options(
        name=jobs.tracker_name,
        namespace=jobs.namespace,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=-1,
        num_cpus=jobs.tracker_num_cpus,
        resources=dict(jobs.tracker_resources),
        max_concurrency=1000,
    ).remote(config, handles, speakers)


class Coalesced:
    """At most one `call()` in flight; calls asked for meanwhile become one more after it.

    A Ray actor call costs the ingress's event loop about a millisecond: at 50 submits/s
    one wake per submit was a fifth of the loop's work, and the tracker only needs to
    hear "look again" once after the last commit it has not seen.
    """

    def __init__(self, call: Callable[[], Awaitable[Any]], timeout_s: float = 5.0) -> None:
        self._call = call
        self._timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def request(self) -> None:
        if self._task is not None:
            # The call in flight may have been served before the caller's commit.
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while True:
                self._again = False
                try:
                    await asyncio.wait_for(self._call(), self._timeout_s)
                except Exception:  # best effort: the tracker's poll finds the job anyway
                    logger.debug("coalesced call failed", exc_info=True)
                if not self._again:
                    return
        finally:
            self._task = None


class RayTrackerClient:
    """`TrackerClient` over the actor handle; re-creates the actor when it is dead for good."""

    def __init__(self, factory: Callable[[], ActorHandle]) -> None:
        self._factory = factory
        self.actor = factory()
        self._wake = Coalesced(lambda: self.actor.wake.remote())

    async def wake(self) -> None:
        self._wake.request()

    async def cancel(self, job_id: str) -> None:
        try:
            await self.actor.cancel.remote(job_id)
        except RayActorError:
            logger.warning("tracker unavailable while cancelling %s", job_id)

    async def events_since(self, job_id: str, after: int, timeout_s: float) -> EventBatch:
        try:
            batch: EventBatch = await self.actor.events_since.remote(job_id, after, timeout_s)
            return batch
        except RayActorError as exc:
            raise TrackerUnavailable(str(exc)) from exc

    async def check(self, timeout_s: float = 5.0) -> bool:
        """Ray restarts a crashed tracker by itself; this covers what it will not restart:
        a `ray.kill(..., no_restart=True)`, or restarts exhausted. The jobs wait in the
        store, so the new tracker leases them as soon as it runs.
        """
        try:
            await asyncio.wait_for(self.actor.ping.remote(), timeout_s)
            return True
        except ActorDiedError:
            logger.warning("job tracker is dead; creating a new one")
            self.actor = self._factory()
        except (TimeoutError, RayActorError):
            logger.warning("job tracker did not answer within %.0f s (restarting?)", timeout_s)
        return False
