"""Plain records returned by the stores. Rows from SQLite and Postgres map through `from_row()`.

SQLite hands back JSON as text and timestamps as ISO strings; Postgres hands back dicts and
aware datetimes. The converters below accept both, so there is one mapping per record.
"""

from __future__ import annotations

import enum
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Row = Mapping[str, Any]


class JobStatus(enum.StrEnum):
    """Lifecycle: queued -> running -> succeeded | failed | cancelled (running may re-queue)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_ts(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return to_utc(value)
    return to_utc(datetime.fromisoformat(str(value)))


def required_ts(row: Row, column: str) -> datetime:
    """A NOT NULL timestamp column (a NULL here means a corrupt row, not a normal case)."""
    value = parse_ts(row[column])
    if value is None:
        raise ValueError(f"column {column} is NULL")
    return value


def parse_json(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str | bytes):
        return dict(json.loads(value))
    return dict(value)


def canonical_json(value: Any) -> str:
    """Stable serialisation: equal values give equal text, hence equal hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def options_hash(model: str, options: Mapping[str, Any]) -> str:
    """Dedupe key of a transcription setup: same audio + same hash => same result."""
    payload = canonical_json({"model": model, "options": dict(options)})
    return hashlib.sha256(payload.encode()).hexdigest()


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class NewJob:
    """What a caller supplies to create a job; the store fills in state and timestamps."""

    tenant: str
    model: str
    options: dict[str, Any] = field(default_factory=dict)
    audio_key: str | None = None
    audio_sha256: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    webhook_url: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    max_attempts: int = 3
    total_chunks: int | None = None
    weight: float = 1.0  # the submitting key's fair-share weight
    key_id: str | None = None  # the API key that submitted it (usage is metered per key)
    id: str = field(default_factory=new_id)

    @property
    def options_hash(self) -> str:
        return options_hash(self.model, self.options)


@dataclass(frozen=True)
class Job:
    """One durable transcription job as stored."""

    id: str
    tenant: str
    status: JobStatus
    priority: int
    model: str
    options: dict[str, Any]
    options_hash: str
    audio_key: str | None
    audio_sha256: str | None
    idempotency_key: str | None
    request_hash: str | None
    total_chunks: int | None
    done_chunks: int
    attempts: int
    max_attempts: int
    error: str | None
    result_key: str | None
    webhook_url: str | None
    metadata: dict[str, Any]
    lease_owner: str | None
    lease_expires_at: datetime | None
    next_attempt_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    weight: float = 1.0

    @property
    def progress(self) -> float | None:
        """Fraction of chunks done, or None while the chunk count is unknown."""
        if not self.total_chunks:
            return None
        return min(1.0, self.done_chunks / self.total_chunks)

    @classmethod
    def from_row(cls, row: Row) -> Job:
        return cls(
            id=row["id"],
            tenant=row["tenant"],
            status=JobStatus(row["status"]),
            priority=int(row["priority"]),
            model=row["model"],
            options=parse_json(row["options"]),
            options_hash=row["options_hash"],
            audio_key=row["audio_key"],
            audio_sha256=row["audio_sha256"],
            idempotency_key=row["idempotency_key"],
            request_hash=row["request_hash"],
            total_chunks=row["total_chunks"],
            done_chunks=int(row["done_chunks"]),
            attempts=int(row["attempts"]),
            max_attempts=int(row["max_attempts"]),
            error=row["error"],
            result_key=row["result_key"],
            webhook_url=row["webhook_url"],
            metadata=parse_json(row["metadata"]),
            lease_owner=row["lease_owner"],
            lease_expires_at=parse_ts(row["lease_expires_at"]),
            next_attempt_at=parse_ts(row["next_attempt_at"]),
            created_at=required_ts(row, "created_at"),
            started_at=parse_ts(row["started_at"]),
            finished_at=parse_ts(row["finished_at"]),
            updated_at=required_ts(row, "updated_at"),
            weight=float(row.get("weight", 1.0)),
        )


@dataclass(frozen=True)
class TenantQueue:
    """One tenant's runnable jobs at one priority (a row of `JobStore.tenant_queues`).

    A running job whose lease expired counts as queued; `due` excludes retries waiting for
    their `next_attempt_at`. `weight` is the largest weight among these jobs.
    """

    tenant: str
    priority: int
    queued: int
    due: int
    running: int
    weight: float
    oldest_queued_at: datetime | None

    @classmethod
    def from_row(cls, row: Row) -> TenantQueue:
        return cls(
            tenant=row["tenant"],
            priority=int(row["priority"]),
            queued=int(row["queued"] or 0),
            due=int(row["due"] or 0),
            running=int(row["running"] or 0),
            weight=float(row["weight"] or 1.0),
            oldest_queued_at=parse_ts(row["oldest_queued_at"]),
        )


@dataclass(frozen=True)
class ChunkCheckpoint:
    """The stored result of one finished chunk; lets a restarted job skip it."""

    job_id: str
    chunk_index: int
    result: dict[str, Any]
    created_at: datetime
    computed_by: str | None

    @classmethod
    def from_row(cls, row: Row) -> ChunkCheckpoint:
        return cls(
            job_id=row["job_id"],
            chunk_index=int(row["chunk_index"]),
            result=parse_json(row["result"]),
            created_at=required_ts(row, "created_at"),
            computed_by=row["computed_by"],
        )


@dataclass(frozen=True)
class WebhookDelivery:
    """One attempt to deliver a job's completion webhook."""

    job_id: str
    attempt: int
    status_code: int | None
    ok: bool
    error: str | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> WebhookDelivery:
        return cls(
            job_id=row["job_id"],
            attempt=int(row["attempt"]),
            status_code=row["status_code"],
            ok=bool(row["ok"]),
            error=row["error"],
            created_at=required_ts(row, "created_at"),
        )


@dataclass(frozen=True)
class ApiKey:
    """A tenant's API key; only its SHA-256 is stored, never the secret."""

    id: str
    tenant: str
    name: str
    key_sha256: str
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: Row) -> ApiKey:
        return cls(
            id=row["id"],
            tenant=row["tenant"],
            name=row["name"],
            key_sha256=row["key_sha256"],
            created_at=required_ts(row, "created_at"),
            revoked_at=parse_ts(row["revoked_at"]),
        )


@dataclass(frozen=True)
class Vocabulary:
    """A tenant's named vocabulary: terms (decoded as hotwords) and custom spellings.

    `spellings` are `{"from": [...], "to": "..."}` objects, applied to the output text.
    """

    id: str
    tenant: str
    name: str
    terms: list[str]
    spellings: list[dict[str, Any]]
    created_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> Vocabulary:
        body = parse_json(row["body"])
        return cls(
            id=row["id"],
            tenant=row["tenant"],
            name=row["name"],
            terms=list(body.get("terms", [])),
            spellings=list(body.get("spellings", [])),
            created_at=required_ts(row, "created_at"),
        )


@dataclass(frozen=True)
class UsageCharge:
    """Audio seconds to meter with a job's completion, under the job's tenant and key."""

    model: str
    source: str
    seconds: float
    day: str  # YYYY-MM-DD, UTC


@dataclass(frozen=True)
class UsageRecord:
    """Audio seconds of one tenant's key on one UTC day, model and source (sync/job/live)."""

    tenant: str
    key_id: str
    day: str  # YYYY-MM-DD, UTC
    model: str
    source: str
    seconds: float
    requests: int

    @classmethod
    def from_row(cls, row: Row) -> UsageRecord:
        return cls(
            tenant=row["tenant"],
            key_id=row["key_id"],
            day=row["day"],
            model=row["model"],
            source=row["source"],
            seconds=float(row["seconds"]),
            requests=int(row["requests"]),
        )
