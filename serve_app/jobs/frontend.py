"""The ingress side of jobs: accept, look up, cancel, stream and render them.

A job is accepted only once its audio object and its row are durable (object first),
so a 202 always names a job that the tracker will run to an end.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ray.exceptions import ActorDiedError, RayActorError

from serve_app.audio import sniff_not_audio
from serve_app.config import AppConfig
from serve_app.errors import (
    BackendUnavailable,
    BadRequest,
    Conflict,
    EmptyFile,
    NotFound,
    PayloadTooLarge,
    UnsupportedMedia,
)
from serve_app.formats import render
from serve_app.jobs.tracker import job_summary
from serve_app.netguard import check_url, fetch
from serve_app.ratelimit import rate_limited
from serve_app.results import TranscribeRequest, TranscriptionResult
from serve_app.service import TranscriptionService
from serve_app.stores import S3Settings, open_blob_store, open_job_store
from serve_app.stores import errors as store_errors
from serve_app.stores.models import Job, JobStatus, NewJob, options_hash

logger = logging.getLogger("ray.serve")
T = TypeVar("T")
# Job ids are generated hex; anything else cannot name a job (and Postgres refuses NULs).
_JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass
class JobSubmission:
    """A parsed POST /v1/jobs: exactly one audio source plus options."""

    tenant: str
    request: TranscribeRequest
    audio: bytes | None = None
    url: str | None = None
    upload_id: str | None = None
    priority: int = 0
    webhook_url: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    max_active_jobs: int | None = None  # the key's quota of queued + running jobs


class JobsFrontend:
    """Job operations used by the HTTP routes (and the handle API)."""

    def __init__(
        self,
        config: AppConfig,
        service: TranscriptionService,
        tracker_factory: Callable[[], Any],
    ) -> None:
        self.config = config
        self.service = service
        self._tracker_factory = tracker_factory
        self.tracker = tracker_factory()
        self.store = open_job_store(config.storage.database_url, migrate=True)
        self.blobs = open_blob_store(
            config.storage.blob_url, S3Settings(**config.storage.s3.model_dump())
        )

    async def submit(self, sub: JobSubmission) -> tuple[dict[str, Any], bool]:
        """Returns (job view, created). Raises ServiceError subclasses."""
        model = self.service.resolve_model(sub.request.model)
        jobs = self.config.jobs
        if sub.webhook_url:
            await asyncio.to_thread(
                check_url,
                sub.webhook_url,
                allow_private=jobs.allow_private_urls,
                allowlist=jobs.url_allowlist,
            )
        if sub.max_active_jobs is not None:
            await self._check_active_quota(sub.tenant, sub.max_active_jobs)
        audio = await self._audio(sub)
        sha = hashlib.sha256(audio).hexdigest()
        options = job_options(sub.request)
        fingerprint = {
            "audio": sha,
            "model": model.name,
            "options": options,
            "priority": sub.priority,
            "webhook_url": sub.webhook_url,
            "metadata": sub.metadata,
        }
        request_hash = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
        new = NewJob(
            tenant=sub.tenant,
            model=model.name,
            options=options,
            audio_key=f"audio/{sha[:2]}/{sha}",
            audio_sha256=sha,
            idempotency_key=sub.idempotency_key,
            request_hash=request_hash,
            webhook_url=sub.webhook_url,
            metadata=sub.metadata,
            priority=sub.priority,
            max_attempts=jobs.max_attempts,
        )
        # One thread hop for dedupe, audio object and row: submit latency is mostly these.
        job, created = await self._store(self._persist, new, audio)
        if created:
            self.tracker.wake.remote()  # fire and forget: the poll would find it anyway
        return job_summary(job), created

    def _persist(self, new: NewJob, audio: bytes) -> tuple[Job, bool]:
        """Dedupe, then the audio object, then the row that points at it (blocking)."""
        if new.idempotency_key is None and new.audio_sha256 is not None:
            done = self.store.find_succeeded_by_audio(
                new.tenant, new.audio_sha256, options_hash(new.model, new.options)
            )
            if done is not None:
                return done, False
        if new.audio_key and not self.blobs.exists(new.audio_key):
            self.blobs.put(new.audio_key, audio)
        return self.store.create_job(new)

    async def _check_active_quota(self, tenant: str, quota: int) -> None:
        # Counted, not reserved: two submissions racing at the edge may both pass.
        active = 0
        for status in (JobStatus.QUEUED, JobStatus.RUNNING):
            active += len(await self._store(self.store.list_jobs, tenant, status, quota, None))
        if active >= quota:
            raise rate_limited(f"{active} jobs are queued or running (quota {quota})", 5.0)

    async def get(self, tenant: str, job_id: str) -> Job:
        _known_id(job_id)
        return await self._store(self.store.get_job, job_id, tenant)

    async def view(self, tenant: str, job_id: str) -> dict[str, Any]:
        return job_summary(await self.get(tenant, job_id))

    async def list(
        self, tenant: str, status: str | None, limit: int, after: str | None
    ) -> dict[str, Any]:
        try:
            wanted = JobStatus(status) if status else None
        except ValueError as exc:
            raise BadRequest(f"unknown status {status!r}") from exc
        if after is not None:
            _known_id(after)
        jobs = await self._store(self.store.list_jobs, tenant, wanted, limit + 1, after)
        page = jobs[:limit]
        return {
            "object": "list",
            "data": [job_summary(j) for j in page],
            "has_more": len(jobs) > limit,
            "next_after": page[-1].id if len(jobs) > limit and page else None,
        }

    async def result(self, tenant: str, job_id: str, fmt: str) -> str | dict[str, Any]:
        job = await self.get(tenant, job_id)
        if job.status != JobStatus.SUCCEEDED or not job.result_key:
            raise Conflict(f"job {job_id} has no result (status {job.status.value})")
        data = json.loads(await self._store(self.blobs.get, job.result_key))
        transcript = TranscriptionResult.from_dict(data)
        grains = {"segment"} | ({"word"} if job.options.get("word_timestamps") else set())
        return render(transcript, fmt, frozenset(grains))

    async def check_tracker(self, timeout_s: float = 5.0) -> bool:
        """Re-create the tracker if it is gone for good; True when it answers.

        Ray restarts a crashed tracker by itself; this covers what it will not restart: a
        `ray.kill(..., no_restart=True)`, or restarts exhausted. The jobs wait in the store,
        so the new tracker leases them as soon as it runs.
        """
        try:
            await asyncio.wait_for(self.tracker.ping.remote(), timeout_s)
            return True
        except ActorDiedError:
            logger.warning("job tracker is dead; creating a new one")
            self.tracker = self._tracker_factory()
        except (TimeoutError, RayActorError):
            logger.warning("job tracker did not answer within %.0f s (restarting?)", timeout_s)
        return False

    async def cancel(self, tenant: str, job_id: str) -> dict[str, Any]:
        _known_id(job_id)
        job = await self._store(self.store.cancel_job, job_id, tenant)
        if job.status == JobStatus.CANCELLED:
            try:
                await self.tracker.cancel.remote(job_id)
            except RayActorError:
                logger.warning("tracker unavailable while cancelling %s", job_id)
        return job_summary(job)

    async def events(self, tenant: str, job_id: str) -> AsyncIterator[str]:
        """Server-sent events: a status snapshot, progress in order, then `done`."""
        job = await self.get(tenant, job_id)
        yield sse("status", job_summary(job))
        if job.status.is_terminal:
            yield sse("done", job_summary(job))
            return
        after, epoch = 0, None
        while True:
            try:
                reply = await self.tracker.events_since.remote(job_id, after, 10.0)
            except RayActorError:
                # The store still has the truth; a dead tracker is replaced, not waited for.
                await self.check_tracker()
                await asyncio.sleep(1.0)
                reply = {"epoch": None, "events": []}
            if reply["epoch"] is not None and reply["epoch"] != epoch:
                if epoch is not None:
                    after = 0
                epoch = reply["epoch"]
            for event in reply["events"]:
                after = event["seq"]
                yield sse(event["event"], event)
                if event["event"] == "done":
                    return
            if not reply["events"]:
                job = await self.get(tenant, job_id)
                if job.status.is_terminal:
                    yield sse("done", job_summary(job))
                    return
                yield ": keep-alive\n\n"

    async def create_upload(self, tenant: str) -> dict[str, Any]:
        import uuid

        upload_id = uuid.uuid4().hex
        key = upload_key(tenant, upload_id)
        limit = self.config.limits.max_upload_bytes
        try:
            post = await asyncio.to_thread(
                self.blobs.presign_put, key, limit, self.config.jobs.presign_expires_s
            )
        except store_errors.Unsupported as exc:
            raise BadRequest("presigned uploads need an S3 blob store (storage.blob_url)") from exc
        return {
            "upload_id": upload_id,
            "method": "POST",
            "url": post["url"],
            "fields": post["fields"],
            "expires_at": post["expires_at"],
            "max_bytes": limit,
        }

    async def _audio(self, sub: JobSubmission) -> bytes:
        sources = [s for s in (sub.audio, sub.url, sub.upload_id) if s is not None]
        if len(sources) != 1:
            raise BadRequest("give exactly one of: a file upload, 'url' or 'upload_id'")
        limit = self.config.limits.max_upload_bytes
        if sub.url is not None:
            jobs = self.config.jobs
            data = await fetch(
                sub.url,
                max_bytes=limit,
                timeout_s=jobs.url_fetch_timeout_s,
                allow_private=jobs.allow_private_urls,
                allowlist=jobs.url_allowlist,
            )
        elif sub.upload_id is not None:
            if not sub.upload_id.isalnum():
                raise BadRequest("malformed upload_id")
            try:
                data = await self._store(self.blobs.get, upload_key(sub.tenant, sub.upload_id))
            except NotFound as exc:
                raise NotFound(f"upload {sub.upload_id} not found (not uploaded yet?)") from exc
        else:
            data = sub.audio or b""
        if not data:
            raise EmptyFile("the audio is empty")
        if len(data) > limit:
            raise PayloadTooLarge(f"audio exceeds the limit of {limit} bytes")
        if sniff_not_audio(data[:64]):
            raise UnsupportedMedia("the content is text, not audio")
        return data

    async def _store(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call in a thread; map store errors to service errors."""
        try:
            return await asyncio.to_thread(fn, *args)
        except store_errors.NotFound as exc:
            raise NotFound(str(exc) or "not found") from exc
        except store_errors.Conflict as exc:
            raise Conflict("Idempotency-Key was already used with a different request") from exc
        except store_errors.StoreUnavailable as exc:
            raise BackendUnavailable(f"storage unavailable: {exc}") from exc


def _known_id(job_id: str) -> None:
    if not _JOB_ID_RE.match(job_id):
        raise NotFound(f"job {job_id} not found")


def job_options(request: TranscribeRequest) -> dict[str, Any]:
    return {
        "task": request.task,
        "language": request.language,
        "prompt": request.prompt,
        "temperature": request.temperature,
        "beam_size": request.beam_size,
        "word_timestamps": request.word_timestamps,
        "segment_timestamps": request.segment_timestamps,
        "pack": request.pack,
    }


def upload_key(tenant: str, upload_id: str) -> str:
    tenant_part = hashlib.sha256(tenant.encode()).hexdigest()[:16]
    return f"uploads/{tenant_part}/{upload_id}"


def sse(event: str, data: dict[str, Any]) -> str:
    seq = data.get("seq")
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n"
