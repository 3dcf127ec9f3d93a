"""The job store interface, plus loaders for the SQL files the database backends share.

`JobStore` is what the job tracker and the HTTP layer program against. All methods are
synchronous and blocking: async callers run them in a thread.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, Literal

from .closeable import Closeable
from .errors import StoreError
from .records import (
    ApiKey,
    ChunkCheckpoint,
    Job,
    JobStatus,
    NewJob,
    TenantQueue,
    UsageCharge,
    UsageRecord,
    Vocabulary,
    WebhookDelivery,
)

# What a retention sweep deletes: the audio object, the result (object + checkpoints), the row.
ExpiryKind = Literal["audio", "result", "job"]

_BLOCK_RE = re.compile(r"^-- name: (?P<name>\w+)(?: \((?P<dialect>\w+)\))?\s*$", re.MULTILINE)
_MIGRATION_RE = re.compile(r"^(?P<version>\d{4})_(?P<name>\w+)\.sql$")


def _sql_dir() -> Any:
    return resources.files(__package__).joinpath("sql")


def load_queries(dialect: str) -> dict[str, str]:
    """Named blocks from `sql/queries.sql`; a `(dialect)` variant overrides the plain one."""
    text = _sql_dir().joinpath("queries.sql").read_text(encoding="utf-8")
    matches = list(_BLOCK_RE.finditer(text))
    plain: dict[str, str] = {}
    specific: dict[str, str] = {}
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        body = text[match.end() : following.start() if following else len(text)].strip()
        block_dialect = match["dialect"]
        if block_dialect is None:
            plain[match["name"]] = body
        elif block_dialect == dialect:
            specific[match["name"]] = body
    return plain | specific


@dataclass(frozen=True)
class Migration:
    """One versioned schema change, applied at most once."""

    version: int
    name: str
    sql: str


def load_migrations(dialect: str) -> list[Migration]:
    """`sql/migrations/<dialect>/NNNN_name.sql`, in version order."""
    folder = _sql_dir().joinpath("migrations", dialect)
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_RE.match(entry.name)
        if match:
            sql = entry.read_text(encoding="utf-8")
            found.append(Migration(int(match["version"]), match["name"], sql))
    found.sort(key=lambda m: m.version)
    if len({m.version for m in found}) != len(found):
        raise StoreError(f"duplicate migration versions in {dialect} migrations")
    return found


class JobStore(Closeable):
    """Durable jobs, chunk checkpoints, webhook deliveries and API keys."""

    @abc.abstractmethod
    def migrate(self) -> list[int]:
        """Apply missing schema migrations in order; returns the versions applied now."""

    @abc.abstractmethod
    def create_job(self, new: NewJob) -> tuple[Job, bool]:
        """Insert a queued job; (existing job, False) when the tenant reuses an idempotency key
        with the same request hash. Raises Conflict when the hash differs."""

    @abc.abstractmethod
    def get_job(self, job_id: str, tenant: str | None = None) -> Job:
        """Raises NotFound if absent or owned by another tenant (when `tenant` is given)."""

    @abc.abstractmethod
    def list_jobs(
        self,
        tenant: str,
        status: JobStatus | None = None,
        limit: int = 50,
        after: str | None = None,
    ) -> list[Job]:
        """Newest first; `after` is the last job id of the previous page."""

    @abc.abstractmethod
    def find_succeeded_by_audio(
        self, tenant: str, audio_sha256: str, options_hash: str
    ) -> Job | None:
        """A finished job of this tenant for the same audio and setup (see `options_hash()`)
        whose result is still kept."""

    @abc.abstractmethod
    def find_expired(
        self,
        kind: ExpiryKind,
        cutoff: datetime,
        limit: int,
        tenant: str | None = None,
        exclude_tenants: Sequence[str] = (),
    ) -> list[Job]:
        """Ended jobs that ended at or before `cutoff` and still hold what `kind` deletes,
        oldest first; only `tenant`'s when given, never those of `exclude_tenants`."""

    @abc.abstractmethod
    def count_audio_references(self, audio_key: str, except_job: str) -> int:
        """Rows other than `except_job` that still point at this (shared) audio object."""

    @abc.abstractmethod
    def clear_audio(self, job_id: str) -> bool:
        """Forget the job's audio key (after its object was deleted); False if no such job."""

    @abc.abstractmethod
    def clear_result(self, job_id: str) -> bool:
        """Forget the result key and delete the chunk checkpoints (they hold the text)."""

    @abc.abstractmethod
    def delete_job(self, job_id: str) -> bool:
        """Delete an ended job's row with its checkpoints and webhook log; False if there is
        no such ended job."""

    @abc.abstractmethod
    def lease_next(
        self,
        owner: str,
        lease_seconds: float,
        now: datetime | None = None,
        tenant: str | None = None,
    ) -> Job | None:
        """Atomically take the next runnable job (queued, or running with an expired lease;
        due by next_attempt_at), highest priority first, then oldest. Counts an attempt.
        With `tenant`, only that tenant's jobs (the fair-share scheduler chose it)."""

    @abc.abstractmethod
    def tenant_queues(
        self, tenant: str | None = None, now: datetime | None = None
    ) -> list[TenantQueue]:
        """Queued, due and running counts per tenant and priority (one tenant with `tenant`)."""

    @abc.abstractmethod
    def renew_lease(
        self, job_id: str, owner: str, lease_seconds: float, now: datetime | None = None
    ) -> bool:
        """Extend a lease; False means it was lost (cancelled, or expired and re-leased)."""

    @abc.abstractmethod
    def release_lease(self, job_id: str, owner: str) -> bool:
        """Hand a running job back to the queue (graceful shutdown) without using an attempt."""

    @abc.abstractmethod
    def set_total_chunks(self, job_id: str, total_chunks: int) -> None:
        """Record how many chunks the audio was split into."""

    @abc.abstractmethod
    def save_checkpoint(
        self,
        job_id: str,
        chunk_index: int,
        result: Mapping[str, Any],
        computed_by: str | None = None,
    ) -> bool:
        """Store one chunk's result once; True if new. Sets done_chunks to the checkpoint count."""

    @abc.abstractmethod
    def load_checkpoints(self, job_id: str) -> list[ChunkCheckpoint]:
        """All checkpoints of a job by chunk index."""

    @abc.abstractmethod
    def save_stage(
        self, job_id: str, stage: str, result: Mapping[str, Any], computed_by: str | None = None
    ) -> bool:
        """Store a finished stage's output once (e.g. "diarization"); True if new."""

    @abc.abstractmethod
    def load_stages(self, job_id: str) -> dict[str, dict[str, Any]]:
        """The finished stages of a job: stage name -> its stored output."""

    @abc.abstractmethod
    def complete_job(
        self, job_id: str, owner: str, result_key: str, usage: UsageCharge | None = None
    ) -> Job | None:
        """running -> succeeded; None if `owner` no longer holds the job. `usage` is added in
        the same transaction, so a job a client sees succeeded is already metered, once."""

    @abc.abstractmethod
    def fail_job(
        self, job_id: str, owner: str, error: str, retry_at: datetime | None = None
    ) -> Job | None:
        """running -> queued (due at `retry_at`) or, without it, -> failed.
        None if `owner` no longer holds the job."""

    @abc.abstractmethod
    def cancel_job(self, job_id: str, tenant: str | None) -> Job:
        """queued/running -> cancelled; terminal jobs come back unchanged.
        `tenant=None` skips the ownership check (internal callers only)."""

    @abc.abstractmethod
    def record_webhook_delivery(
        self,
        job_id: str,
        attempt: int,
        status_code: int | None,
        ok: bool,
        error: str | None = None,
    ) -> WebhookDelivery:
        """Log one webhook attempt."""

    @abc.abstractmethod
    def list_webhook_deliveries(self, job_id: str) -> list[WebhookDelivery]:
        """Webhook attempts of a job, oldest first."""

    @abc.abstractmethod
    def count_by_status(self) -> dict[JobStatus, int]:
        """Job counts for every status (zeros included), for metrics."""

    @abc.abstractmethod
    def create_api_key(self, tenant: str, key_sha256: str, name: str) -> ApiKey:
        """Store a key by its hash; Conflict if the hash exists."""

    @abc.abstractmethod
    def get_api_key_by_hash(self, key_sha256: str) -> ApiKey | None:
        """The active (not revoked) key with this hash."""

    @abc.abstractmethod
    def revoke_api_key(self, key_id: str, tenant: str) -> bool:
        """False if no active key with this id belongs to the tenant."""

    @abc.abstractmethod
    def list_api_keys(self, tenant: str) -> list[ApiKey]:
        """All keys of a tenant, revoked ones included."""

    # ---- issue 15: vocabularies and usage ----------------------------------------------

    @abc.abstractmethod
    def create_vocabulary(
        self, tenant: str, name: str, terms: list[str], spellings: list[dict[str, Any]]
    ) -> Vocabulary: ...

    @abc.abstractmethod
    def get_vocabulary(self, vocabulary_id: str, tenant: str) -> Vocabulary:
        """NotFound also for another tenant's vocabulary."""

    @abc.abstractmethod
    def list_vocabularies(self, tenant: str) -> list[Vocabulary]: ...

    @abc.abstractmethod
    def delete_vocabulary(self, vocabulary_id: str, tenant: str) -> None:
        """NotFound also for another tenant's vocabulary."""

    @abc.abstractmethod
    def add_usage(
        self, tenant: str, key_id: str, model: str, source: str, seconds: float, day: str
    ) -> None:
        """Add audio seconds to the (tenant, key, UTC day, model, source) counter."""

    @abc.abstractmethod
    def usage_between(self, tenant: str, from_day: str, to_day: str) -> list[UsageRecord]:
        """A tenant's counters for days in [from_day, to_day] (YYYY-MM-DD)."""

    @abc.abstractmethod
    def key_usage_on(self, key_id: str, day: str) -> float:
        """Audio seconds a key used on one UTC day (all models and sources)."""
