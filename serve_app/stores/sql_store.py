"""The SQL implementation of `JobStore` that SQLite and Postgres share.

`SqlJobStore` writes every operation once, on top of named queries from `sql/queries.sql`;
the dialect stores only supply connections, transactions, parameter adaptation and error
mapping. Timestamps come from the application clock (`clock`), never from the database, so
both dialects behave the same and tests can pass explicit times.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from .errors import Conflict, NotFound, StoreError
from .job_store import ExpiryKind, JobStore, load_migrations
from .records import (
    ChunkCheckpoint,
    Job,
    JobStatus,
    NewJob,
    TenantQueue,
    UsageCharge,
    WebhookDelivery,
    canonical_json,
    parse_json,
    to_utc,
)
from .sql_base import MIGRATION_LOCK_KEY
from .sql_tenant import SqlTenantData


class SqlJobStore(SqlTenantData, JobStore):
    """Every JobStore operation, written once against named queries."""

    def migrate(self) -> list[int]:
        applied_now: list[int] = []
        with self._transaction() as tx:
            tx.rows("lock_migrations", {"lock_key": MIGRATION_LOCK_KEY})
            tx.rows("create_schema_migrations")
            done = {row["version"] for row in tx.rows("applied_migrations")}
            for migration in load_migrations(self.dialect):
                if migration.version in done:
                    continue
                tx.script(migration.sql)
                params = {"version": migration.version, "name": migration.name}
                tx.rows("record_migration", {**params, "now": self._now()})
                applied_now.append(migration.version)
        return applied_now

    def create_job(self, new: NewJob) -> tuple[Job, bool]:
        params = {
            "id": new.id,
            "tenant": new.tenant,
            "priority": new.priority,
            "model": new.model,
            "options": new.options,
            "options_hash": new.options_hash,
            "audio_key": new.audio_key,
            "audio_sha256": new.audio_sha256,
            "idempotency_key": new.idempotency_key,
            "request_hash": new.request_hash,
            "total_chunks": new.total_chunks,
            "max_attempts": new.max_attempts,
            "webhook_url": new.webhook_url,
            "metadata": new.metadata,
            "weight": new.weight,
            "key_id": new.key_id,
            "now": self._now(),
        }
        with self._transaction() as tx:
            row = self._one(tx, "insert_job", params)
            if row is not None:
                return Job.from_row(row), True
            # The insert hit the (tenant, idempotency_key) constraint: the earlier job exists.
            existing = self._one(tx, "get_job_by_idempotency_key", params)
        if existing is None:
            raise StoreError("idempotency conflict but no existing job found")
        job = Job.from_row(existing)
        if job.request_hash != new.request_hash:
            raise Conflict(f"idempotency key {new.idempotency_key!r} was used for another request")
        return job, False

    def get_job(self, job_id: str, tenant: str | None = None) -> Job:
        with self._transaction(write=False) as tx:
            row = self._one(tx, "get_job", {"id": job_id, "tenant": tenant})
        if row is None:
            raise NotFound(f"job {job_id} not found")
        return Job.from_row(row)

    def list_jobs(
        self,
        tenant: str,
        status: JobStatus | None = None,
        limit: int = 50,
        after: str | None = None,
    ) -> list[Job]:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        params = {
            "tenant": tenant,
            "status": JobStatus(status).value if status is not None else None,
            "limit": limit,
            "after": after,
        }
        with self._transaction(write=False) as tx:
            if (
                after is not None
                and self._one(tx, "get_job", {"id": after, "tenant": tenant}) is None
            ):
                raise NotFound(f"job {after} not found")
            return [Job.from_row(row) for row in tx.rows("list_jobs", params)]

    def find_succeeded_by_audio(
        self, tenant: str, audio_sha256: str, options_hash: str
    ) -> Job | None:
        params = {"tenant": tenant, "audio_sha256": audio_sha256, "options_hash": options_hash}
        with self._transaction(write=False) as tx:
            row = self._one(tx, "find_kept_result_by_audio", params)
        return Job.from_row(row) if row is not None else None

    def find_expired(
        self,
        kind: ExpiryKind,
        cutoff: datetime,
        limit: int,
        tenant: str | None = None,
        exclude_tenants: Sequence[str] = (),
    ) -> list[Job]:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        params = {
            "kind": kind,
            "cutoff": to_utc(cutoff),
            "limit": limit,
            "tenant": tenant,
            # JSON text, not a list: both dialects unpack it in SQL (json_each / jsonb).
            "excluded": canonical_json(sorted(exclude_tenants)),
        }
        with self._transaction(write=False) as tx:
            return [Job.from_row(row) for row in tx.rows("find_expired", params)]

    def count_audio_references(self, audio_key: str, except_job: str) -> int:
        params = {"audio_key": audio_key, "id": except_job}
        with self._transaction(write=False) as tx:
            row = self._one(tx, "count_audio_references", params)
        return int(row["n"]) if row is not None else 0

    def clear_audio(self, job_id: str) -> bool:
        with self._transaction() as tx:
            return self._one(tx, "clear_audio", {"id": job_id, "now": self._now()}) is not None

    def clear_result(self, job_id: str) -> bool:
        params = {"id": job_id, "now": self._now()}
        with self._transaction() as tx:
            tx.rows("delete_checkpoints", params)
            tx.rows("delete_stages", params)
            return self._one(tx, "clear_result", params) is not None

    def delete_job(self, job_id: str) -> bool:
        with self._transaction() as tx:
            return self._one(tx, "delete_job", {"id": job_id}) is not None

    def lease_next(
        self,
        owner: str,
        lease_seconds: float,
        now: datetime | None = None,
        tenant: str | None = None,
    ) -> Job | None:
        params = self._lease_params(owner, lease_seconds, now)
        query = "lease_next" if tenant is None else "lease_next_for_tenant"
        with self._transaction() as tx:
            row = self._one(tx, query, {**params, "tenant": tenant})
        return Job.from_row(row) if row is not None else None

    def tenant_queues(
        self, tenant: str | None = None, now: datetime | None = None
    ) -> list[TenantQueue]:
        params = {"tenant": tenant, "now": self._now(now)}
        with self._transaction(write=False) as tx:
            rows = tx.rows("tenant_queues", params)
        return [TenantQueue.from_row(row) for row in rows]

    def renew_lease(
        self, job_id: str, owner: str, lease_seconds: float, now: datetime | None = None
    ) -> bool:
        params = {"id": job_id, **self._lease_params(owner, lease_seconds, now)}
        with self._transaction() as tx:
            return self._one(tx, "renew_lease", params) is not None

    def _lease_params(
        self, owner: str, lease_seconds: float, now: datetime | None
    ) -> dict[str, Any]:
        at = self._now(now)
        return {
            "owner": owner,
            "now": at,
            "lease_expires_at": at + timedelta(seconds=lease_seconds),
        }

    def release_lease(self, job_id: str, owner: str) -> bool:
        params = {"id": job_id, "owner": owner, "now": self._now()}
        with self._transaction() as tx:
            return self._one(tx, "release_lease", params) is not None

    def set_total_chunks(self, job_id: str, total_chunks: int) -> None:
        params = {"id": job_id, "total_chunks": total_chunks, "now": self._now()}
        with self._transaction() as tx:
            if self._one(tx, "set_total_chunks", params) is None:
                raise NotFound(f"job {job_id} not found")

    def save_checkpoint(
        self,
        job_id: str,
        chunk_index: int,
        result: Mapping[str, Any],
        computed_by: str | None = None,
    ) -> bool:
        params = {
            "id": job_id,
            "chunk_index": chunk_index,
            "result": dict(result),
            "computed_by": computed_by,
            "now": self._now(),
        }
        with self._transaction() as tx:
            if self._one(tx, "lock_job", params) is None:
                raise NotFound(f"job {job_id} not found")
            inserted = self._one(tx, "insert_checkpoint", params) is not None
            tx.rows("refresh_done_chunks", params)
        return inserted

    def load_checkpoints(self, job_id: str) -> list[ChunkCheckpoint]:
        with self._transaction(write=False) as tx:
            rows = tx.rows("load_checkpoints", {"id": job_id})
        return [ChunkCheckpoint.from_row(row) for row in rows]

    def save_stage(
        self, job_id: str, stage: str, result: Mapping[str, Any], computed_by: str | None = None
    ) -> bool:
        params = {
            "id": job_id,
            "stage": stage,
            "result": dict(result),
            "computed_by": computed_by,
            "now": self._now(),
        }
        with self._transaction() as tx:
            if self._one(tx, "lock_job", params) is None:
                raise NotFound(f"job {job_id} not found")
            return self._one(tx, "insert_stage", params) is not None

    def load_stages(self, job_id: str) -> dict[str, dict[str, Any]]:
        with self._transaction(write=False) as tx:
            rows = tx.rows("load_stages", {"id": job_id})
        return {row["stage"]: parse_json(row["result"]) for row in rows}

    def complete_job(
        self, job_id: str, owner: str, result_key: str, usage: UsageCharge | None = None
    ) -> Job | None:
        params = {"id": job_id, "owner": owner, "result_key": result_key, "now": self._now()}
        with self._transaction() as tx:
            row = self._one(tx, "complete_job", params)
            if row is not None and usage is not None and usage.seconds > 0:
                self._charge(tx, row["tenant"], row["key_id"] or "-", usage)
        return Job.from_row(row) if row is not None else None

    def fail_job(
        self, job_id: str, owner: str, error: str, retry_at: datetime | None = None
    ) -> Job | None:
        params: dict[str, Any] = {"id": job_id, "owner": owner, "error": error}
        params["now"] = self._now()
        if retry_at is None:
            return self._finish("fail_job", params)
        return self._finish("retry_job", {**params, "retry_at": to_utc(retry_at)})

    def _finish(self, query: str, params: Mapping[str, Any]) -> Job | None:
        with self._transaction() as tx:
            row = self._one(tx, query, params)
        return Job.from_row(row) if row is not None else None

    def cancel_job(self, job_id: str, tenant: str | None) -> Job:
        params = {"id": job_id, "tenant": tenant, "now": self._now()}
        with self._transaction() as tx:
            row = self._one(tx, "cancel_job", params) or self._one(tx, "get_job", params)
        if row is None:
            raise NotFound(f"job {job_id} not found")
        return Job.from_row(row)

    def record_webhook_delivery(
        self,
        job_id: str,
        attempt: int,
        status_code: int | None,
        ok: bool,
        error: str | None = None,
    ) -> WebhookDelivery:
        params = {
            "id": job_id,
            "attempt": attempt,
            "status_code": status_code,
            "ok": ok,
            "error": error,
            "now": self._now(),
        }
        return WebhookDelivery.from_row(
            self._insert("insert_webhook_delivery", params, "webhook delivery")
        )

    def list_webhook_deliveries(self, job_id: str) -> list[WebhookDelivery]:
        with self._transaction(write=False) as tx:
            rows = tx.rows("list_webhook_deliveries", {"id": job_id})
        return [WebhookDelivery.from_row(row) for row in rows]

    def count_by_status(self) -> dict[JobStatus, int]:
        with self._transaction(write=False) as tx:
            rows = tx.rows("count_by_status")
        counts = dict.fromkeys(JobStatus, 0)
        counts.update({JobStatus(row["status"]): int(row["n"]) for row in rows})
        return counts
