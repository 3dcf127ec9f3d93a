"""Retention: delete ended jobs' audio, results and rows on schedule, or at once on request.

Blobs go before the rows that point at them, so a sweep killed anywhere leaves only rows
whose objects may already be gone; deleting a missing object is a no-op, so the next sweep
finishes the work without errors. Audio objects are content-addressed and shared by every
job of the same audio, so one is deleted only when no other row points at it any more.

A submit of the same audio can race that delete (it may find the object, skip writing
it, and insert its row just after the sweeper counted). Both sides check again after
their own write, so one of them always puts the object back: the sweeper re-counts the
references after deleting and restores the bytes it read first; the submit checks the
object is still there after inserting its row (`jobs.submits.persist_submits`).
A job that has not ended is never touched (the store queries select ended jobs only).

Runs wherever a `JobStore` and a `BlobStore` are open: the JobTracker runs the sweeper,
the Ingress purges on `DELETE /v1/jobs/{id}`. Blocking; async callers use a thread.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from serve_app.config import RetentionConfig
from serve_app.stores import BlobStore, Job, JobStore
from serve_app.stores.errors import NotFound
from serve_app.stores.job_store import ExpiryKind
from serve_app.stores.records import utcnow

logger = logging.getLogger(__name__)

PURGE = "purge"  # reason of deletions asked for by DELETE /v1/jobs/{id}
EXPIRED = "expired"  # reason of deletions made by the sweeper
_KINDS: tuple[ExpiryKind, ...] = ("audio", "result", "job")
UPLOADS_PREFIX = "uploads/"  # where `POST /v1/uploads` lets clients write (jobs.frontend)


class DeletionObserver(Protocol):
    """Counts deletions (`serve_app.observability.DeletionMetrics` in the Ray processes)."""

    def deleted(self, kind: str, reason: str, count: int) -> None: ...


@dataclass
class Deletions:
    """What one purge or sweep deleted, by kind: audio / result / upload objects, job rows."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str, count: int = 1) -> None:
        if count:
            self.counts[kind] += count

    def merge(self, other: Deletions) -> None:
        self.counts.update(other.counts)

    def report(self, observer: DeletionObserver | None, reason: str) -> None:
        if observer is not None:
            for kind, count in self.counts.items():
                observer.deleted(kind, reason, count)


class Retention:
    """Purges one job, or sweeps every job past its tenant's retention policy."""

    def __init__(
        self,
        config: RetentionConfig,
        store: JobStore,
        blobs: BlobStore,
        observer: DeletionObserver | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`sleep` paces sweeps (`config.max_jobs_per_s`); a sweep runs in a thread."""
        self.config = config
        self.store = store
        self.blobs = blobs
        self.observer = observer
        self._sleep = sleep

    def purge(self, job: Job) -> Deletions:
        """Delete an ended job's audio, result and row now (DELETE /v1/jobs/{id})."""
        done = self._delete(job, "job")
        done.report(self.observer, PURGE)
        return done

    def sweep(self, now: datetime | None = None) -> Deletions:
        """One pass over every kind and policy, at most `max_batches` batches of each."""
        at = now or utcnow()
        total = Deletions()
        overridden = sorted(self.config.tenants)
        policies: list[tuple[str | None, list[str]]] = [(None, overridden)]
        policies += [(tenant, []) for tenant in overridden]
        for kind in _KINDS:
            for tenant, excluded in policies:
                cutoff = self._cutoff(kind, tenant, at)
                if cutoff is not None:
                    total.merge(self._sweep_kind(kind, cutoff, tenant, excluded))
        if self.config.upload_hours is not None:
            total.merge(self._sweep_uploads(at - timedelta(hours=self.config.upload_hours)))
        total.report(self.observer, EXPIRED)
        return total

    def _sweep_uploads(self, cutoff: datetime) -> Deletions:
        """Presigned uploads written before `cutoff` (no row points at them: jobs copy)."""
        done = Deletions()
        limit = self.config.batch_size * self.config.max_batches
        for key in self.blobs.list_older(UPLOADS_PREFIX, cutoff, limit):
            self.blobs.delete(key)
            done.add("upload")
        return done

    def _cutoff(self, kind: ExpiryKind, tenant: str | None, now: datetime) -> datetime | None:
        policy = self.config.policy_for(tenant)
        if kind == "audio":
            keep = None if policy.audio_hours is None else timedelta(hours=policy.audio_hours)
        elif kind == "result":
            keep = None if policy.result_days is None else timedelta(days=policy.result_days)
        else:
            keep = None if policy.job_days is None else timedelta(days=policy.job_days)
        return None if keep is None else now - keep

    def _sweep_kind(
        self, kind: ExpiryKind, cutoff: datetime, tenant: str | None, excluded: list[str]
    ) -> Deletions:
        done = Deletions()
        size = self.config.batch_size
        for _ in range(self.config.max_batches):
            batch = self.store.find_expired(kind, cutoff, size, tenant, excluded)
            for job in self._paced(batch):
                done.merge(self._delete(job, kind))
            if len(batch) < size:
                break
        return done

    def _paced(self, jobs: Sequence[Job]) -> Iterator[Job]:
        """`jobs` one by one, no faster than `max_jobs_per_s`: a sweep is background work,
        and submits share the disk and the database lock with it."""
        rate = self.config.max_jobs_per_s
        for job in jobs:
            started = time.monotonic()
            yield job
            if rate is not None:
                self._sleep(max(0.0, 1.0 / rate - (time.monotonic() - started)))

    def _delete_shared_audio(self, key: str, job_id: str) -> bool:
        """Delete an audio object nobody else pointed at; False if a new job took it meanwhile."""
        try:
            data = self.blobs.get(key)
        except NotFound:
            return False  # an earlier, interrupted sweep already deleted it
        self.blobs.delete(key)
        if self.store.count_audio_references(key, job_id) == 0:
            return True
        self.blobs.put(key, data)  # a submit of the same audio landed between count and delete
        logger.info("audio %s was resubmitted while being deleted; kept", key)
        return False

    def _delete(self, job: Job, kind: ExpiryKind) -> Deletions:
        """Objects first, then the columns or the row that pointed at them."""
        done = Deletions()
        if job.audio_key and kind in ("audio", "job"):
            if self.store.count_audio_references(job.audio_key, job.id) == 0 and (
                self._delete_shared_audio(job.audio_key, job.id)
            ):
                done.add("audio")
            self.store.clear_audio(job.id)
        if kind in ("result", "job"):
            if job.result_key:
                self.blobs.delete(job.result_key)
                done.add("result")
            self.store.clear_result(job.id)
        if kind == "job" and self.store.delete_job(job.id):
            done.add("job")
        return done
