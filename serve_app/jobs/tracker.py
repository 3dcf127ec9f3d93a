"""JobTracker: the job queue's owner (run as a named, detached Ray actor by `jobs.actor`).

It leases runnable jobs from the job store (weighted fair share across tenants within each
priority, see `jobs.fairshare`; then priority and FIFO within a tenant), runs at most
`max_concurrent_jobs` at once through the same batching path as interactive requests,
renews leases while it works, retries with capped exponential backoff, honours
cancellation and delivers webhooks. All state lives in the job store, so a restarted
tracker (or a whole new Ray cluster) picks up where the old one stopped. Progress goes to
one place, its in-memory event log, which SSE streams long-poll through `events_since`.

No Ray here: it reaches models through `ModelClient`s, so `serve_app.testing` runs it
in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from serve_app.config import AppConfig
from serve_app.inference.protocol import ModelClient
from serve_app.inference.speaker import SpeakerClient
from serve_app.jobs.eventlog import JobEventLog
from serve_app.jobs.fairshare import FairShare, TenantDepth, TenantQueues, tenant_depths
from serve_app.jobs.retention import DeletionObserver, Retention
from serve_app.jobs.retry import is_permanent, retry_delay
from serve_app.jobs.runner import JobRunner, Publish
from serve_app.jobs.views import JobView
from serve_app.jobs.webhooks import DeliveryAttempt, deliver
from serve_app.pipeline.service import TranscriptionService
from serve_app.security.netguard import check_url
from serve_app.security.usage import UsageMeter, UsageObserver
from serve_app.stores import S3Settings, StoreTuning, open_blob_store, open_job_store
from serve_app.stores.records import Job, JobStatus, utcnow

logger = logging.getLogger(__name__)


class JobObserver(Protocol):
    """Job outcome metrics (`serve_app.observability.JobMetrics` in the actor)."""

    def job_finished(self, model: str, status: str) -> None: ...

    def webhook_attempt(self, ok: bool) -> None: ...

    def tenant_depth(
        self, tenant: str, queued: int, running: int, oldest_queued_age_s: float
    ) -> None:
        """One tenant label of the queue gauges (the tracker bounds the label set)."""


@dataclass
class EventBatch:
    """Events of one job after a sequence number; `epoch` changes when the tracker does."""

    epoch: str
    events: list[dict[str, Any]]


@dataclass
class TrackerStats:
    worker_id: str
    running: list[str]
    chunks_computed: int
    duplicate_checkpoints: int
    outcomes: dict[str, int] = field(default_factory=dict)


class TrackerClient(Protocol):
    """What the ingress calls on the tracker: a Ray actor, or one in-process in tests."""

    async def wake(self) -> None:
        """A job was submitted: look at the queue now (best effort, never raises)."""

    async def cancel(self, job_id: str) -> None:
        """Stop a running job whose row is already cancelled (best effort, never raises)."""

    async def events_since(self, job_id: str, after: int, timeout_s: float) -> EventBatch:
        """Raises `TrackerUnavailable` when the tracker cannot answer right now."""

    async def check(self, timeout_s: float = 5.0) -> bool:
        """True when the tracker answers; brings back one that is gone for good."""


class TrackerUnavailable(RuntimeError):
    """The tracker is restarting or gone; the store still holds every job."""


class JobTracker:
    """Leases and runs jobs; call `start()` inside the event loop that should run them."""

    def __init__(
        self,
        config: AppConfig,
        models: Mapping[str, ModelClient],
        observer: JobObserver | None = None,
        deletions: DeletionObserver | None = None,
        usage: UsageObserver | None = None,
        speakers: SpeakerClient | None = None,
    ) -> None:
        self.config = config
        self.jobs_config = config.jobs
        self.worker_id = f"tracker-{uuid.uuid4().hex[:12]}"
        self.epoch = self.worker_id
        tuning = StoreTuning(**config.storage.resilience.model_dump())
        self.store = open_job_store(config.storage.database_url, migrate=True, tuning=tuning)
        self.blobs = open_blob_store(
            config.storage.blob_url,
            S3Settings(**config.storage.s3.model_dump()),
            tuning,
        )
        self.service = TranscriptionService(config, models, speakers)
        self.service.vocabularies = self.store
        self.events = JobEventLog()
        self.runner = JobRunner(self.service, self.store, self.blobs, self.worker_id)
        self.meter = UsageMeter(self.store, config.usage, usage)
        self.running: dict[str, asyncio.Task[None]] = {}
        self.outcomes: dict[str, int] = {}
        self.observer = observer
        self.fair = FairShare()
        self.retention = Retention(config.retention, self.store, self.blobs, deletions)
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        self._depths_at = 0.0
        self._depth_labels: set[str] = set()

    def start(self) -> None:
        """Start the queue loop in the running event loop."""
        loop = asyncio.get_running_loop()
        self._loop_task = loop.create_task(self._main())
        if self.config.retention.enabled:
            self._sweep_task = loop.create_task(self._sweep_forever())
        logger.info("JobTracker %s started", self.worker_id)

    async def stop(self) -> None:
        """Stop the queue loop and the running jobs (their leases expire and recover)."""
        loops = (self._loop_task, self._sweep_task)
        tasks = [t for t in (*loops, *self.running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        """Release the stores and decode workers (after `stop`)."""
        self.service.close()
        self.store.close()
        self.blobs.close()

    # ---- actor API -------------------------------------------------------------------

    async def wake(self) -> None:
        """A job was submitted: look at the queue now instead of at the next poll."""
        self._wakeup.set()

    async def cancel(self, job_id: str) -> bool:
        """Stop a running job (its row was already marked cancelled by the caller)."""
        task = self.running.get(job_id)
        if task is None:
            return False
        task.cancel()
        return True

    async def events_since(self, job_id: str, after: int, timeout_s: float) -> EventBatch:
        events = await self.events.since(job_id, after, min(timeout_s, 30.0))
        return EventBatch(self.epoch, events)

    async def stats(self) -> TrackerStats:
        return TrackerStats(
            worker_id=self.worker_id,
            running=sorted(self.running),
            chunks_computed=self.runner.chunks_computed,
            duplicate_checkpoints=self.runner.duplicate_checkpoints,
            outcomes=dict(self.outcomes),
        )

    async def ping(self) -> str:
        return self.worker_id

    async def sweep(self) -> dict[str, int]:
        """Run one retention sweep now; what it deleted, by kind."""
        done = await asyncio.to_thread(self.retention.sweep)
        return dict(done.counts)

    # ---- internals -------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        # The first sweep waits one interval: a tracker that restarts in a loop stays cheap.
        while True:
            await asyncio.sleep(self.config.retention.sweep_interval_s)
            try:
                done = await self.sweep()
            except Exception:  # a sweep killed halfway is finished by the next one
                logger.exception("retention sweep failed; retrying next interval")
                continue
            if done:
                logger.info("retention sweep deleted %s", done)

    async def _main(self) -> None:
        renewer = asyncio.get_running_loop().create_task(self._renew_leases())
        try:
            while True:
                try:
                    await self._fill_slots()
                except Exception:  # the queue loop must survive store hiccups
                    logger.exception("job queue poll failed; retrying")
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wakeup.wait(), timeout=self.jobs_config.poll_interval_s
                    )
        finally:
            renewer.cancel()

    async def _fill_slots(self) -> None:
        capacity = self.jobs_config.max_concurrent_jobs
        loop = asyncio.get_running_loop()
        queues = None
        # The summary also feeds the gauges: read it when a slot is free or they are stale.
        if (
            len(self.running) < capacity
            or loop.time() - self._depths_at >= self.jobs_config.poll_interval_s
        ):
            queues = TenantQueues.load(await self.store.guard.run(self.store.tenant_queues))
            self._report_depths(queues)
        while queues is not None and len(self.running) < capacity:
            tenant = self.fair.pick(queues, capacity) if self.jobs_config.fair_share else None
            if tenant is None and self.jobs_config.fair_share:
                return
            job = await self.store.guard.run(
                self.store.lease_next,
                self.worker_id,
                self.jobs_config.lease_seconds,
                None,
                tenant,
            )
            if job is None:
                if tenant is None:
                    return
                queues.drained(tenant)  # another worker took it; the others may still wait
                continue
            queues.leased(job.tenant, job.priority)
            task = loop.create_task(self._run(job))
            self.running[job.id] = task
            task.add_done_callback(functools.partial(self._finished, job.id))

    def _report_depths(self, queues: TenantQueues) -> None:
        self._depths_at = asyncio.get_running_loop().time()
        if self.observer is None:
            return
        depths = tenant_depths(queues, utcnow(), self.jobs_config.metrics_max_tenants)
        labels = {d.tenant for d in depths}
        # Gauges keep their last value: a tenant whose queue emptied is set back to zero.
        gone = [TenantDepth(t, 0, 0, 0.0) for t in sorted(self._depth_labels - labels)]
        for depth in [*depths, *gone]:
            self.observer.tenant_depth(
                depth.tenant, depth.queued, depth.running, depth.oldest_queued_age_s
            )
        self._depth_labels = labels

    def _finished(self, job_id: str, _task: asyncio.Task[None]) -> None:
        self.running.pop(job_id, None)
        self._wakeup.set()

    async def _renew_leases(self) -> None:
        interval = self.jobs_config.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            for job_id, task in list(self.running.items()):
                try:
                    held = await self.store.guard.run(
                        self.store.renew_lease,
                        job_id,
                        self.worker_id,
                        self.jobs_config.lease_seconds,
                    )
                except Exception:
                    logger.exception("lease renewal of %s failed", job_id)
                    continue
                if not held:  # cancelled, or taken over after we stalled
                    logger.info("lease of job %s lost; stopping it", job_id)
                    task.cancel()

    async def _run(self, job: Job) -> None:
        publish = self._publisher(job.id)
        publish("progress", {"status": "running", "attempt": job.attempts})
        try:
            key = await self.runner.run(job, publish)
        except asyncio.CancelledError:
            current = await self.store.guard.run(self.store.get_job, job.id)
            if current.status == JobStatus.CANCELLED:
                await self._terminal(current, publish)
            raise
        except Exception as exc:
            await self._failed(job, exc, publish)
            return
        seconds = self.runner.durations.pop(job.id, 0.0)
        # Metered in the completion's own transaction: once, by the worker whose completion
        # counted, and before any client can see the job succeeded.
        charge = self.meter.charge(job.model, "job", seconds)
        finished = await self.store.guard.run(
            self.store.complete_job, job.id, self.worker_id, key, charge
        )
        if finished is not None:
            self.meter.observe(job.tenant, job.model, "job", seconds)
            await self._terminal(finished, publish)

    async def _failed(self, job: Job, exc: Exception, publish: Publish) -> None:
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        permanent = is_permanent(exc) or job.attempts >= job.max_attempts
        retry_at = None
        if not permanent:
            delay = retry_delay(job.attempts, self.jobs_config)
            retry_at = utcnow() + delay
            logger.warning(
                "job %s attempt %d failed (%s); retry in %.1fs",
                job.id,
                job.attempts,
                message,
                delay.total_seconds(),
            )
        else:
            logger.warning("job %s failed permanently: %s", job.id, message)
        updated = await self.store.guard.run(
            self.store.fail_job, job.id, self.worker_id, message, retry_at
        )
        if updated is None:
            return
        if updated.status.is_terminal:
            await self._terminal(updated, publish)
        else:
            publish("progress", {"status": "queued", "error": message, "retry": True})

    async def _terminal(self, job: Job, publish: Publish) -> None:
        self.outcomes[job.status.value] = self.outcomes.get(job.status.value, 0) + 1
        if self.observer is not None:
            self.observer.job_finished(job.model, job.status.value)
        publish("done", JobView.of(job).as_event())
        if job.webhook_url:
            asyncio.get_running_loop().create_task(self._webhook(job))

    async def _webhook(self, job: Job) -> None:
        event = {"type": f"job.{job.status.value}", "job": JobView.of(job).as_event()}
        body = json.dumps(event).encode()
        try:
            secret = await asyncio.to_thread(self.jobs_config.signing_secret)
        except OSError:
            logger.exception("cannot read jobs.webhook_secret_file; webhook of %s not sent", job.id)
            return

        async def record(attempt: DeliveryAttempt) -> None:
            if self.observer is not None:
                self.observer.webhook_attempt(attempt.ok)
            try:
                await self.store.guard.run(
                    self.store.record_webhook_delivery,
                    job.id,
                    attempt.attempt,
                    attempt.status_code,
                    attempt.ok,
                    attempt.error,
                )
            except Exception:
                logger.exception("could not record webhook delivery for %s", job.id)

        def guard(url: str) -> list[str]:
            return check_url(
                url,
                allow_private=self.jobs_config.allow_private_urls,
                allowlist=self.jobs_config.url_allowlist,
            )

        await deliver(
            job.webhook_url or "",
            body,
            secret,
            attempts=self.jobs_config.webhook_attempts,
            timeout_s=self.jobs_config.webhook_timeout_s,
            on_attempt=record,
            check_url=guard,
        )

    def _publisher(self, job_id: str) -> Publish:
        def publish(kind: str, data: dict[str, Any]) -> None:
            self.events.append(job_id, kind, data)

        return publish
