"""What callers see of a job: `JobView`, the body of GET /v1/jobs/{id} and of job events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from serve_app.stores.records import Job, JobStatus, TenantQueue


class JobView(BaseModel):
    """The public view of a job."""

    id: str
    object: Literal["job"] = "job"
    status: JobStatus
    model: str
    priority: int
    progress: float | None = Field(
        description="Share of chunks done, 0 to 1; null while the chunk count is unknown."
    )
    done_chunks: int
    total_chunks: int | None
    attempts: int
    error: str | None
    options: dict[str, Any] = Field(description="The TranscribeOptions the job runs with.")
    metadata: dict[str, Any]
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    result_available: bool

    @classmethod
    def of(cls, job: Job) -> JobView:
        return cls(
            id=job.id,
            status=job.status,
            model=job.model,
            priority=job.priority,
            progress=job.progress if job.status != JobStatus.SUCCEEDED else 1.0,
            done_chunks=job.done_chunks,
            total_chunks=job.total_chunks,
            attempts=job.attempts,
            error=job.error,
            options=job.options,
            metadata=job.metadata,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            result_available=job.status == JobStatus.SUCCEEDED and job.result_key is not None,
        )

    def as_event(self) -> dict[str, Any]:
        """JSON-ready dict, as events and webhooks carry it."""
        return self.model_dump(mode="json")


class QueueView(BaseModel):
    """The caller's tenant in the job queue, over all of its jobs (not only this page)."""

    queued: int = Field(description="Jobs waiting for a slot (retries waiting included).")
    running: int = Field(description="Jobs being transcribed now.")
    oldest_queued_age_s: float | None = Field(
        description="Seconds the oldest queued job has waited; null when none is queued."
    )
    weight: float = Field(description="The tenant's fair-share weight (1 when idle).")

    @classmethod
    def of(cls, rows: Sequence[TenantQueue], now: datetime) -> QueueView:
        oldest = min((r.oldest_queued_at for r in rows if r.oldest_queued_at), default=None)
        return cls(
            queued=sum(r.queued for r in rows),
            running=sum(r.running for r in rows),
            oldest_queued_age_s=max(0.0, (now - oldest).total_seconds()) if oldest else None,
            weight=max((r.weight for r in rows), default=1.0),
        )


class JobList(BaseModel):
    """One page of GET /v1/jobs, newest first, and the tenant's queue."""

    object: Literal["list"] = "list"
    data: list[JobView]
    has_more: bool
    next_after: str | None = Field(None, description="Pass as `after` for the next page.")
    queue: QueueView | None = Field(None, description="The tenant's queued and running jobs.")
