"""The ingress side of jobs: accept, look up, cancel, stream and render them.

A job is accepted only once its audio object and its row are durable (object first),
so a 202 always names a job that the tracker will run to an end. Concurrent submits are
made durable together (`jobs.groupcommit`): one thread hop and one round of fsyncs.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import hashlib
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from serve_app.config import AppConfig
from serve_app.errors import (
    BackendUnavailable,
    BadRequest,
    Conflict,
    EmptyFile,
    NotFound,
    PayloadTooLarge,
    UnsupportedMedia,
    VocabularyNotFound,
)
from serve_app.jobs.groupcommit import GroupCommit
from serve_app.jobs.retention import UPLOADS_PREFIX, DeletionObserver, Retention
from serve_app.jobs.submits import Submit, persist_submits
from serve_app.jobs.tracker import EventBatch, TrackerClient, TrackerUnavailable
from serve_app.jobs.views import JobList, JobView, QueueView
from serve_app.options import TranscribeOptions
from serve_app.pipeline.decode import sniff_not_audio
from serve_app.pipeline.references import reference_bytes
from serve_app.pipeline.service import TranscriptionService
from serve_app.results import TranscriptionResult
from serve_app.security.netguard import check_url, fetch
from serve_app.security.ratelimit import rate_limited
from serve_app.security.usage import seconds_to_midnight, utc_day
from serve_app.stores import (
    BlobStore,
    PresignedPost,
    S3Settings,
    StoreTuning,
    open_blob_store,
    open_job_store,
)
from serve_app.stores import errors as store_errors
from serve_app.stores.records import Job, JobStatus, NewJob, Vocabulary, utcnow

logger = logging.getLogger("ray.serve")

# One submit in a group commit: the new row, its audio, the API key that sent it.
T = TypeVar("T")
KEEPALIVE = "keep-alive"  # an event name the SSE route renders as a comment line
# Job ids are generated hex; anything else cannot name a job (and Postgres refuses NULs).
_JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass
class JobSubmission:
    """A parsed POST /v1/jobs: exactly one audio source plus options."""

    tenant: str
    options: TranscribeOptions
    audio: bytes | None = None
    url: str | None = None
    upload_id: str | None = None
    priority: int = 0
    webhook_url: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    max_active_jobs: int | None = None  # the key's quota of queued + running jobs
    weight: float = 1.0  # the key's fair-share weight
    key_id: str | None = None  # the API key that submitted it, for usage metering
    audio_minutes_per_day: float | None = None  # the key's daily audio quota


class JobsFrontend:
    """Job operations used by the HTTP routes (and the handle API)."""

    def __init__(
        self,
        config: AppConfig,
        service: TranscriptionService,
        tracker: TrackerClient,
        deletions: DeletionObserver | None = None,
    ) -> None:
        self.config = config
        self.service = service
        self.tracker = tracker
        tuning = StoreTuning(**config.storage.resilience.model_dump())
        self.store = open_job_store(config.storage.database_url, migrate=True, tuning=tuning)
        self.blobs = open_blob_store(
            config.storage.blob_url,
            S3Settings(**config.storage.s3.model_dump()),
            tuning,
        )
        self._submits: GroupCommit[Submit, tuple[Job, bool]] = GroupCommit(
            functools.partial(persist_submits, self.store, self.blobs),
            writers=self.blobs.write_concurrency,
            run=self.store.guard.run,
        )
        self.retention = Retention(config.retention, self.store, self.blobs, deletions)
        service.vocabularies = self.store  # requests name vocabularies by id

    def close(self) -> None:
        self.store.close()
        self.blobs.close()

    async def submit(self, sub: JobSubmission) -> tuple[JobView, bool]:
        """Returns (job view, created). Raises ServiceError subclasses."""
        model = self.service.resolve_model(sub.options.model)
        # Known-speaker clips ride in the options: refuse bad ones (413, 415) before the 202.
        for url in sub.options.known_speaker_references:
            reference_bytes(url, self.config.diarization.max_reference_bytes)
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
        if sub.audio_minutes_per_day is not None and sub.key_id is not None:
            # The job's length is known once it is decoded: refuse only a spent quota here.
            spent = await self._store(self.store.key_usage_on, sub.key_id, utc_day())
            if spent >= sub.audio_minutes_per_day * 60:
                raise rate_limited(
                    f"daily audio quota of {sub.audio_minutes_per_day:g} min is spent",
                    seconds_to_midnight(),
                )
        if sub.options.vocabulary:
            await self.get_vocabulary(sub.tenant, sub.options.vocabulary)  # 404 before the 202
        audio = await self._audio(sub)
        sha = hashlib.sha256(audio).hexdigest()
        # The row's model column names the model; options keep what else was asked.
        options = sub.options.model_dump(mode="json", exclude={"model"})
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
            weight=sub.weight,
            key_id=sub.key_id,
        )
        # Concurrent submits share one thread hop and one round of fsyncs (group commit).
        try:
            job, created = await self._submits.submit((new, audio))
        except store_errors.StoreError as exc:
            raise _service_error(exc) from exc
        if created:
            await self.tracker.wake()
        return JobView.of(job), created

    async def _check_active_quota(self, tenant: str, quota: int) -> None:
        # Counted, not reserved: two submissions racing at the edge may both pass.
        rows = await self._store(self.store.tenant_queues, tenant)
        active = sum(row.queued + row.running for row in rows)
        if active >= quota:
            raise rate_limited(f"{active} jobs are queued or running (quota {quota})", 5.0)

    async def get(self, tenant: str, job_id: str) -> Job:
        _known_id(job_id)
        return await self._store(self.store.get_job, job_id, tenant)

    async def view(self, tenant: str, job_id: str) -> JobView:
        return JobView.of(await self.get(tenant, job_id))

    async def list(self, tenant: str, status: str | None, limit: int, after: str | None) -> JobList:
        try:
            wanted = JobStatus(status) if status else None
        except ValueError as exc:
            raise BadRequest(f"unknown status {status!r}") from exc
        if after is not None:
            _known_id(after)
        jobs, queue = await self._store(self._page, tenant, wanted, limit + 1, after)
        page = jobs[:limit]
        return JobList(
            data=[JobView.of(j) for j in page],
            has_more=len(jobs) > limit,
            next_after=page[-1].id if len(jobs) > limit and page else None,
            queue=queue,
        )

    def _page(
        self, tenant: str, status: JobStatus | None, limit: int, after: str | None
    ) -> tuple[Sequence[Job], QueueView]:
        """One page of jobs and the tenant's queue, in one thread hop (blocking)."""
        jobs = self.store.list_jobs(tenant, status, limit, after)
        now = utcnow()
        return jobs, QueueView.of(self.store.tenant_queues(tenant, now), now)

    async def result(self, tenant: str, job_id: str) -> tuple[Job, TranscriptionResult]:
        """The job and its transcript; Conflict while it has none."""
        job = await self.get(tenant, job_id)
        if job.status == JobStatus.SUCCEEDED and not job.result_key:
            raise NotFound(f"the result of job {job_id} was deleted (retention)")
        if job.status != JobStatus.SUCCEEDED or not job.result_key:
            raise Conflict(f"job {job_id} has no result (status {job.status.value})")
        data = await self._store(self.blobs.get, job.result_key)
        return job, TranscriptionResult.from_json(data)

    async def delete(self, tenant: str, job_id: str) -> JobView | None:
        """Cancel a queued or running job (its view comes back); purge an ended one at once:
        audio, result and row (None comes back, and later reads find nothing)."""
        job = await self.get(tenant, job_id)
        if job.status.is_terminal:
            await self._store(self.retention.purge, job)
            return None
        job = await self._store(self.store.cancel_job, job_id, tenant)
        if job.status == JobStatus.CANCELLED:
            await self.tracker.cancel(job_id)
        return JobView.of(job)

    async def events(self, tenant: str, job_id: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(event, data) pairs: a status snapshot, progress in order, then `done`."""
        job = await self.get(tenant, job_id)
        yield "status", JobView.of(job).as_event()
        if job.status.is_terminal:
            yield "done", JobView.of(job).as_event()
            return
        after, epoch = 0, None
        while True:
            try:
                batch = await self.tracker.events_since(job_id, after, 10.0)
            except TrackerUnavailable:
                # The store still has the truth; a dead tracker is replaced, not waited for.
                await self.tracker.check()
                await asyncio.sleep(1.0)
                batch = EventBatch("", [])
            if batch.epoch and batch.epoch != epoch:
                if epoch is not None:
                    after = 0  # a new tracker numbers its events from 1 again
                epoch = batch.epoch
            for event in batch.events:
                after = event["seq"]
                yield event["event"], event
                if event["event"] == "done":
                    return
            if not batch.events:
                job = await self.get(tenant, job_id)
                if job.status.is_terminal:
                    yield "done", JobView.of(job).as_event()
                    return
                yield KEEPALIVE, {}

    async def create_upload(self, tenant: str) -> tuple[str, PresignedPost]:
        """A new upload id and the presigned POST that uploads it."""
        upload_id = uuid.uuid4().hex
        key = upload_key(tenant, upload_id)
        limit = self.config.limits.max_upload_bytes
        try:
            post = await self.blobs.guard.run(
                self.blobs.presign_put, key, limit, self.config.jobs.presign_expires_s
            )
        except store_errors.Unsupported as exc:
            raise BadRequest("presigned uploads need an S3 blob store (storage.blob_url)") from exc
        return upload_id, post

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

    # ---- vocabularies (issue 15): tenant-scoped, another tenant's is a 404 ------------------

    async def create_vocabulary(
        self,
        tenant: str,
        name: str,
        terms: builtins.list[str],
        spellings: builtins.list[dict[str, Any]],
    ) -> Vocabulary:
        limit = self.config.jobs.max_vocabularies_per_tenant
        if len(await self._store(self.store.list_vocabularies, tenant)) >= limit:
            raise Conflict(f"a tenant may keep at most {limit} vocabularies; delete one first")
        return await self._store(self.store.create_vocabulary, tenant, name, terms, spellings)

    async def get_vocabulary(self, tenant: str, vocabulary_id: str) -> Vocabulary:
        _known_id(vocabulary_id, "vocabulary")
        try:
            return await self._store(self.store.get_vocabulary, vocabulary_id, tenant)
        except NotFound as exc:
            raise VocabularyNotFound(exc.message) from exc

    async def list_vocabularies(self, tenant: str) -> builtins.list[Vocabulary]:
        return await self._store(self.store.list_vocabularies, tenant)

    async def delete_vocabulary(self, tenant: str, vocabulary_id: str) -> None:
        _known_id(vocabulary_id, "vocabulary")
        await self._store(self.store.delete_vocabulary, vocabulary_id, tenant)

    async def _store(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call on its store's own threads (breaker first); map store
        errors to service errors."""
        owner = getattr(fn, "__self__", None)
        guard = owner.guard if isinstance(owner, BlobStore) else self.store.guard
        try:
            return await guard.run(fn, *args)
        except store_errors.StoreError as exc:
            raise _service_error(exc) from exc


def _service_error(exc: store_errors.StoreError) -> Exception:
    """What the caller sees of a store error; unknown store errors pass through as they were."""
    if isinstance(exc, store_errors.NotFound):
        return NotFound(str(exc) or "not found")
    if isinstance(exc, store_errors.Conflict):
        return Conflict("Idempotency-Key was already used with a different request")
    if isinstance(exc, store_errors.StoreUnavailable):
        return BackendUnavailable(f"storage unavailable: {exc}")
    return exc


def _known_id(job_id: str, what: str = "job") -> None:
    if not _JOB_ID_RE.match(job_id):
        raise NotFound(f"{what} {job_id} not found")


def upload_key(tenant: str, upload_id: str) -> str:
    tenant_part = hashlib.sha256(tenant.encode()).hexdigest()[:16]
    return f"{UPLOADS_PREFIX}{tenant_part}/{upload_id}"
