"""JobTracker: a named, detached Ray actor that owns the job queue.

It leases runnable jobs from the job store (priority, then FIFO), runs at most
`max_concurrent_jobs` at once through the same batching path as interactive requests,
renews leases while it works, retries with capped exponential backoff, honours
cancellation and delivers webhooks. All state lives in the job store, so a restarted
tracker (or a whole new Ray cluster) picks up where the old one stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from datetime import timedelta
from typing import Any

import ray

from serve_app.config import AppConfig
from serve_app.jobs.eventlog import JobEventLog
from serve_app.jobs.runner import JobRunner, is_permanent
from serve_app.jobs.webhooks import DeliveryAttempt, deliver
from serve_app.netguard import check_url
from serve_app.observability import JobMetrics
from serve_app.service import TranscriptionService
from serve_app.stores import S3Settings, open_blob_store, open_event_bus, open_job_store
from serve_app.stores.models import Job, JobStatus, utcnow

logger = logging.getLogger(__name__)


class JobTracker:
    """The actor body (wrapped with `ray.remote` by `get_or_create_tracker`)."""

    def __init__(self, config: AppConfig, transcribers: dict[str, Any]) -> None:
        self.config = config
        self.jobs_config = config.jobs
        self.worker_id = f"tracker-{uuid.uuid4().hex[:12]}"
        self.epoch = self.worker_id
        self.store = open_job_store(config.storage.database_url, migrate=True)
        self.blobs = open_blob_store(
            config.storage.blob_url, S3Settings(**config.storage.s3.model_dump())
        )
        self.bus = open_event_bus(config.storage.redis_url)
        self.service = TranscriptionService(config, transcribers)
        self.events = JobEventLog()
        self.runner = JobRunner(self.service, self.store, self.blobs, self.worker_id)
        self.running: dict[str, asyncio.Task[None]] = {}
        self.outcomes: dict[str, int] = {}
        self.metrics = JobMetrics()
        self._wakeup = asyncio.Event()
        # Async actors run __init__ inside their event loop, so the loop can start here.
        self._loop_task = asyncio.get_running_loop().create_task(self._main())
        logger.info("JobTracker %s started", self.worker_id)

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

    async def events_since(self, job_id: str, after: int, timeout_s: float) -> dict[str, Any]:
        events = await self.events.since(job_id, after, min(timeout_s, 30.0))
        return {"epoch": self.epoch, "events": events}

    async def stats(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "running": sorted(self.running),
            "chunks_computed": self.runner.chunks_computed,
            "duplicate_checkpoints": self.runner.duplicate_checkpoints,
            "outcomes": dict(self.outcomes),
        }

    async def ping(self) -> str:
        return self.worker_id

    # ---- internals -------------------------------------------------------------------

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
        while len(self.running) < self.jobs_config.max_concurrent_jobs:
            job = await asyncio.to_thread(
                self.store.lease_next, self.worker_id, self.jobs_config.lease_seconds
            )
            if job is None:
                return
            task = asyncio.get_running_loop().create_task(self._run(job))
            self.running[job.id] = task
            task.add_done_callback(lambda _t, job_id=job.id: self._finished(job_id))

    def _finished(self, job_id: str) -> None:
        self.running.pop(job_id, None)
        self._wakeup.set()

    async def _renew_leases(self) -> None:
        interval = self.jobs_config.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            for job_id, task in list(self.running.items()):
                try:
                    held = await asyncio.to_thread(
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
            current = await asyncio.to_thread(self.store.get_job, job.id)
            if current.status == JobStatus.CANCELLED:
                await self._terminal(current, publish)
            raise
        except Exception as exc:
            await self._failed(job, exc, publish)
            return
        finished = await asyncio.to_thread(self.store.complete_job, job.id, self.worker_id, key)
        if finished is not None:
            await self._terminal(finished, publish)

    async def _failed(self, job: Job, exc: Exception, publish: Any) -> None:
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        permanent = is_permanent(exc) or job.attempts >= job.max_attempts
        retry_at = None
        if not permanent:
            delay = min(
                self.jobs_config.retry_base_s * 2 ** (job.attempts - 1),
                self.jobs_config.retry_max_s,
            )
            retry_at = utcnow() + timedelta(seconds=delay)
            logger.warning(
                "job %s attempt %d failed (%s); retry in %.1fs",
                job.id,
                job.attempts,
                message,
                delay,
            )
        else:
            logger.warning("job %s failed permanently: %s", job.id, message)
        updated = await asyncio.to_thread(
            self.store.fail_job, job.id, self.worker_id, message, retry_at
        )
        if updated is None:
            return
        if updated.status.is_terminal:
            await self._terminal(updated, publish)
        else:
            publish("progress", {"status": "queued", "error": message, "retry": True})

    async def _terminal(self, job: Job, publish: Any) -> None:
        self.outcomes[job.status.value] = self.outcomes.get(job.status.value, 0) + 1
        self.metrics.job_finished(job.model, job.status.value)
        publish("done", job_summary(job))
        if job.webhook_url:
            asyncio.get_running_loop().create_task(self._webhook(job))

    async def _webhook(self, job: Job) -> None:
        body = json.dumps({"type": f"job.{job.status.value}", "job": job_summary(job)}).encode()

        def record(attempt: DeliveryAttempt) -> None:
            self.metrics.webhook_attempt(attempt.ok)
            try:
                self.store.record_webhook_delivery(
                    job.id, attempt.attempt, attempt.status_code, attempt.ok, attempt.error
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
            self.jobs_config.webhook_secret,
            attempts=self.jobs_config.webhook_attempts,
            timeout_s=self.jobs_config.webhook_timeout_s,
            on_attempt=record,
            check_url=guard,
        )

    def _publisher(self, job_id: str):
        def publish(kind: str, data: dict[str, Any]) -> None:
            event = self.events.append(job_id, kind, data)
            try:
                self.bus.publish_sync(f"job:{job_id}", event)
            except Exception:  # progress fan-out is best effort; the store is the truth
                logger.debug("event bus publish failed", exc_info=True)

        return publish


def job_summary(job: Job) -> dict[str, Any]:
    """The public view of a job (also the GET /v1/jobs/{id} body)."""
    return {
        "id": job.id,
        "object": "job",
        "status": job.status.value,
        "model": job.model,
        "priority": job.priority,
        "progress": job.progress if job.status != JobStatus.SUCCEEDED else 1.0,
        "done_chunks": job.done_chunks,
        "total_chunks": job.total_chunks,
        "attempts": job.attempts,
        "error": job.error,
        "options": job.options,
        "metadata": job.metadata,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "result_available": job.status == JobStatus.SUCCEEDED and job.result_key is not None,
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def get_or_create_tracker(config: AppConfig, transcribers: dict[str, Any]) -> Any:
    """The one tracker of this cluster: named, detached, restarted forever by Ray."""
    jobs = config.jobs
    actor_cls = ray.remote(JobTracker)
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
    ).remote(config, transcribers)
