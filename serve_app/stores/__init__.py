"""Storage layer: job store (SQLite/Postgres) and blob store (folder/S3), picked by URL.

Callers pick a backend by URL and program against the interfaces; nothing here reads the
environment or opens anything at import time.

    sqlite:///jobs.db, sqlite:////abs/jobs.db, sqlite:///~/jobs.db, sqlite:///:memory:
    postgresql://user:pass@host:5432/db
    file:///abs/dir, file:///~/dir
    s3://bucket/optional/prefix      (endpoint and credentials in S3Settings)
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from .blob import BlobStore, PresignedPost, S3BlobStore, S3Settings
from .errors import Conflict, InvalidKey, NotFound, StoreError, StoreUnavailable, Unsupported
from .file_blob import FileBlobStore
from .guard import BackendDown, BackendGuard, CircuitBreaker, StoreTuning
from .job_store import JobStore
from .records import (
    ApiKey,
    ChunkCheckpoint,
    Job,
    JobStatus,
    NewJob,
    WebhookDelivery,
    options_hash,
)

__all__ = [
    "ApiKey",
    "BackendDown",
    "BackendGuard",
    "BlobStore",
    "ChunkCheckpoint",
    "CircuitBreaker",
    "Conflict",
    "FileBlobStore",
    "InvalidKey",
    "Job",
    "JobStatus",
    "JobStore",
    "NewJob",
    "NotFound",
    "PresignedPost",
    "S3BlobStore",
    "S3Settings",
    "StoreError",
    "StoreTuning",
    "StoreUnavailable",
    "Unsupported",
    "WebhookDelivery",
    "open_blob_store",
    "open_job_store",
    "options_hash",
]


def _redact(url: str) -> str:
    """The URL without credentials, for error messages."""
    parts = urlsplit(url)
    if not (parts.username or parts.password):
        return url
    netloc = f"***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def open_job_store(
    database_url: str, *, migrate: bool = False, tuning: StoreTuning | None = None
) -> JobStore:
    """Open a job store; `migrate=True` also applies pending schema migrations. `tuning`:
    timeouts, executor and breaker settings (defaults fail fast within about a second)."""
    scheme = database_url.split(":", 1)[0].lower()
    store: JobStore
    if scheme == "sqlite":
        prefix = "sqlite:///"
        if not database_url.startswith(prefix):
            raise ValueError(f"SQLite URLs look like sqlite:///path, got {database_url!r}")
        # SQLAlchemy convention: sqlite:///rel.db is relative, sqlite:////abs.db absolute.
        path = unquote(database_url[len(prefix) :])
        if not path:
            raise ValueError("SQLite URL names no file")
        from .sqlite_store import SqliteJobStore

        store = SqliteJobStore(path, tuning=tuning)
    elif scheme in ("postgresql", "postgres"):
        # Imported lazily so SQLite-only setups never load psycopg.
        from .postgres_store import PostgresJobStore

        store = PostgresJobStore(database_url, tuning=tuning)
    else:
        raise ValueError(f"unsupported database URL {_redact(database_url)!r}")
    if migrate:
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
    return store


def open_blob_store(
    blob_url: str, s3: S3Settings | None = None, tuning: StoreTuning | None = None
) -> BlobStore:
    """Open a blob store; for s3:// the bucket is created if it does not exist yet."""
    parts = urlsplit(blob_url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URLs must be local (file:///path), got {blob_url!r}")
        path = unquote(parts.path)
        # file:///~/dir means a folder in the home directory.
        if path.startswith("/~"):
            path = path[1:]
        return FileBlobStore(path)
    if scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"S3 URLs look like s3://bucket/prefix, got {blob_url!r}")
        store = S3BlobStore(parts.netloc, unquote(parts.path), s3, tuning)
        try:
            store.ensure_bucket()
        except BaseException:
            store.close()
            raise
        return store
    raise ValueError(f"unsupported blob URL {blob_url!r}")
