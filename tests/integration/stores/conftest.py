"""Backend-parametrized store fixtures: every store test runs once per implementation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serve_app.stores import BlobStore, JobStore, open_blob_store, open_job_store

integration = pytest.mark.integration


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=integration)])
def job_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def job_store_url(job_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database that already has the schema (Postgres: copied from the template)."""
    if job_backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
        open_job_store(url, migrate=True).close()
        return url
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def empty_job_store_url(job_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database without any schema yet."""
    if job_backend == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return str(request.getfixturevalue("postgres_empty_url"))


@pytest.fixture
def job_store(job_store_url: str) -> Iterator[JobStore]:
    with open_job_store(job_store_url) as store:
        yield store


@pytest.fixture(params=["file", pytest.param("s3", marks=integration)])
def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "file":
        store = open_blob_store(f"file://{tmp_path / 'blobs'}")
    else:
        settings: Any = request.getfixturevalue("s3_settings")
        store = open_blob_store(request.getfixturevalue("s3_bucket_url"), settings)
    with store:
        yield store
