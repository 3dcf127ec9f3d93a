"""Retention sweeps and purges, run on SQLite + folder and on Postgres + S3 (SeaweedFS)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from serve_app.config import RetentionConfig
from serve_app.jobs.retention import Retention
from serve_app.jobs.submits import persist_submits
from serve_app.stores import (
    BlobStore,
    Job,
    JobStatus,
    JobStore,
    NewJob,
    NotFound,
    open_blob_store,
    open_job_store,
)
from serve_app.stores.records import utcnow

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
SHORT = {"audio_hours": 1, "result_days": 1, "job_days": 2, "batch_size": 2}


@pytest.fixture(params=["sqlite+file", pytest.param("postgres+s3", marks=pytest.mark.integration)])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[JobStore, BlobStore]]:
    if request.param == "sqlite+file":
        job_url = f"sqlite:///{tmp_path / 'jobs.db'}"
        blobs = open_blob_store(f"file://{tmp_path / 'blobs'}")
    else:
        job_url = request.getfixturevalue("postgres_url")
        settings: Any = request.getfixturevalue("s3_settings")
        blobs = open_blob_store(request.getfixturevalue("s3_bucket_url"), settings)
    with open_job_store(job_url, migrate=True) as store, blobs:
        yield store, blobs


class Deployment:
    """Jobs in every state, with their audio and result objects really stored."""

    def __init__(self, store: JobStore, blobs: BlobStore) -> None:
        self.store = store
        self.blobs = blobs

    def job(self, tenant: str = "acme", audio: str = "a", end: str | None = "succeeded") -> Job:
        key = f"audio/{audio[:2]}/{audio}"
        self.blobs.put(key, b"RIFF" + audio.encode())
        job, _ = self.store.create_job(
            NewJob(tenant=tenant, model="tiny.en", audio_key=key, audio_sha256=audio)
        )
        if end is None:
            return job
        leased = self.store.lease_next("w", 60)
        assert leased is not None and leased.id == job.id
        self.store.save_checkpoint(job.id, 0, {"text": "hello"})
        if end == "running":
            return leased
        if end == "succeeded":
            result = f"results/{job.id}.json"
            self.blobs.put(result, b'{"text": "hello"}')
            finished = self.store.complete_job(job.id, "w", result)
        else:
            finished = self.store.fail_job(job.id, "w", "boom")
        assert finished is not None
        return finished

    def has_audio(self, job: Job) -> bool:
        return job.audio_key is not None and self.blobs.exists(job.audio_key)

    def row(self, job: Job) -> Job | None:
        try:
            return self.store.get_job(job.id)
        except NotFound:
            return None


def retention(stores: tuple[JobStore, BlobStore], **config: Any) -> Retention:
    return Retention(RetentionConfig(**{**SHORT, **config}), *stores)


def test_expired_data_goes_unexpired_stays_and_unfinished_jobs_are_never_swept(stores) -> None:
    d = Deployment(*stores)
    done = d.job(audio="a1")
    failed = d.job(audio="a2", end="failed")
    running = d.job(audio="a3", end="running")
    queued = d.job(audio="a4", end=None)
    sweeper = retention(stores)
    now = utcnow()

    # Within every retention window nothing goes.
    assert sweeper.sweep(now + 0.5 * HOUR).counts == {}
    assert all(d.has_audio(j) for j in (done, failed, running, queued))

    # Past audio_hours: the audio of ended jobs, nothing else.
    assert sweeper.sweep(now + 2 * HOUR).counts == {"audio": 2}
    assert not d.has_audio(done) and not d.has_audio(failed)
    assert d.has_audio(running) and d.has_audio(queued)
    kept = d.row(done)
    assert kept is not None and kept.audio_key is None and kept.result_key
    assert d.blobs.exists(kept.result_key) and d.store.load_checkpoints(done.id)

    # Past result_days: results and checkpoints (also the failed job's partial text).
    assert sweeper.sweep(now + 1.5 * DAY).counts == {"result": 1}
    assert done.result_key is not None and not d.blobs.exists(done.result_key)
    assert d.store.load_checkpoints(done.id) == d.store.load_checkpoints(failed.id) == []
    assert d.store.get_job(done.id).result_key is None
    # The dedupe lookup never hands back a job whose result is gone.
    assert d.store.find_succeeded_by_audio("acme", "a1", done.options_hash) is None

    # Past job_days: the rows. Running and queued jobs are untouched, however old.
    assert sweeper.sweep(now + 30 * DAY).counts == {"job": 2}
    assert d.row(done) is None and d.row(failed) is None
    still = d.row(running)
    assert still is not None and still.status == JobStatus.RUNNING
    assert d.store.load_checkpoints(running.id) and d.has_audio(running)
    assert d.row(queued) is not None and d.has_audio(queued)
    assert sweeper.sweep(now + 30 * DAY).counts == {}  # idempotent


def test_a_sweep_spreads_its_deletions_at_max_jobs_per_s(stores) -> None:
    d = Deployment(*stores)
    jobs = [d.job(audio=f"p{i}") for i in range(6)]
    naps: list[float] = []
    sweeper = Retention(
        RetentionConfig(audio_hours=0, max_jobs_per_s=20, batch_size=4), *stores, sleep=naps.append
    )
    assert sweeper.sweep(utcnow() + HOUR).counts == {"audio": 6}
    assert len(naps) == len(jobs)  # one pause after each job, batches included
    assert all(0 <= nap <= 1 / 20 for nap in naps)
    unpaced = Retention(
        RetentionConfig(audio_hours=0, max_jobs_per_s=None), *stores, sleep=naps.append
    )
    d.job(audio="p9")
    assert unpaced.sweep(utcnow() + HOUR).counts == {"audio": 1}
    assert len(naps) == len(jobs)


def test_shared_audio_stays_while_another_job_points_at_it(stores) -> None:
    d = Deployment(*stores)
    first = d.job(audio="same")
    second = d.job(audio="same", end=None)  # same content key, still queued
    sweeper = retention(stores)
    assert sweeper.sweep(utcnow() + 2 * HOUR).counts == {}
    assert d.store.get_job(first.id).audio_key is None
    assert d.has_audio(second)
    leased = d.store.lease_next("w", 60)
    assert leased is not None and d.store.complete_job(second.id, "w", "results/x.json")
    assert sweeper.sweep(utcnow() + 2 * HOUR).counts == {"audio": 1}
    assert not d.blobs.exists("audio/sa/same")


class Interleaved:
    """Delegates to a store, running `before` once just ahead of the first call of `method`:
    the other side of a race, placed at its worst moment."""

    def __init__(self, inner: Any, method: str, before: Any) -> None:
        self._inner, self._method, self._before = inner, method, before

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name != self._method or self._before is None:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            before, self._before = self._before, None
            before()
            return attr(*args, **kwargs)

        return call


def _resubmit(store: Any, blobs: Any, audio: str) -> Job:
    key = f"audio/{audio[:2]}/{audio}"
    # Its own Idempotency-Key: without one, the earlier job's result would be handed back.
    new = NewJob(
        tenant="acme",
        model="tiny.en",
        audio_key=key,
        audio_sha256=audio,
        idempotency_key=uuid.uuid4().hex,
        request_hash=audio,
    )
    [result] = persist_submits(store, blobs, [(new, b"RIFF" + audio.encode())])
    assert isinstance(result, tuple) and result[1], result
    return result[0]


def test_a_resubmit_between_the_sweepers_count_and_delete_keeps_its_audio(stores) -> None:
    """The submit finds the object and inserts its row after the sweeper counted 0 refs."""
    store, blobs = stores
    d = Deployment(store, blobs)
    d.job(audio="race1")
    resubmitted: list[Job] = []
    racing = Interleaved(blobs, "delete", lambda: resubmitted.append(_resubmit(*stores, "race1")))
    assert (
        Retention(RetentionConfig(**SHORT), store, racing).sweep(utcnow() + 2 * HOUR).counts == {}
    )
    assert d.has_audio(resubmitted[0])
    assert blobs.get("audio/ra/race1") == b"RIFFrace1"


def test_a_sweep_between_the_submits_check_and_insert_keeps_its_audio(stores) -> None:
    """The sweeper deletes after the submit saw the object, before the submit's row exists."""
    store, blobs = stores
    d = Deployment(store, blobs)
    d.job(audio="race2")
    swept: list[dict[str, int]] = []

    def sweep() -> None:
        swept.append(retention(stores).sweep(utcnow() + 2 * HOUR).counts)

    job = _resubmit(Interleaved(store, "create_job", sweep), blobs, "race2")
    assert swept == [{"audio": 1}]  # it did delete: the submit put the object back
    assert d.has_audio(job) and blobs.get("audio/ra/race2") == b"RIFFrace2"


def test_presigned_uploads_go_after_upload_hours(stores) -> None:
    d = Deployment(*stores)
    d.blobs.put("uploads/tenant1/up1", b"RIFF")
    kept = d.job(audio="up2")
    assert retention(stores).sweep(utcnow() + 2 * HOUR).counts == {"audio": 1}  # < 24 h
    assert d.blobs.exists("uploads/tenant1/up1")
    assert retention(stores, upload_hours=None).sweep(utcnow() + 30 * DAY).counts == {
        "result": 1, "job": 1,
    }  # fmt: skip
    assert d.blobs.exists("uploads/tenant1/up1") and d.row(kept) is None
    assert retention(stores).sweep(utcnow() + 25 * HOUR).counts == {"upload": 1}
    assert not d.blobs.exists("uploads/tenant1/up1")


def test_tenant_overrides(stores) -> None:
    d = Deployment(*stores)
    default = d.job(tenant="acme", audio="b1")
    keep = d.job(tenant="archive", audio="b2")
    quick = d.job(tenant="gdpr", audio="b3")
    sweeper = retention(
        stores,
        tenants={"archive": {"audio_hours": None, "job_days": None}, "gdpr": {"job_days": 0}},
    )
    assert sweeper.config.policy_for("archive").result_days == 1  # inherited
    now = utcnow()
    assert sweeper.sweep(now + 2 * HOUR).counts == {"audio": 2, "result": 1, "job": 1}
    assert d.row(quick) is None and quick.result_key and not d.blobs.exists(quick.result_key)
    assert not d.has_audio(default) and d.has_audio(keep)
    sweeper.sweep(now + 365 * DAY)
    assert d.row(default) is None
    archived = d.row(keep)
    assert archived is not None and archived.result_key is None and d.has_audio(keep)


def test_purge_removes_audio_result_and_row_at_once(stores) -> None:
    d = Deployment(*stores)
    job = d.job(audio="c1")
    assert job.result_key is not None
    done = retention(stores).purge(job)
    assert done.counts == {"audio": 1, "result": 1, "job": 1}
    assert d.row(job) is None
    assert not d.blobs.exists(job.result_key) and not d.blobs.exists("audio/c1/c1")
    assert d.store.find_succeeded_by_audio("acme", "c1", job.options_hash) is None


class Crash(Exception):
    """Stands for the sweeper's process dying at this point."""


class CrashingBlobs:
    """The real blob store, except that the process "dies" right after its `deletes`-th
    deletion, before the row that named the object is updated."""

    def __init__(self, inner: BlobStore, deletes: int) -> None:
        self.inner = inner
        self.left = deletes

    def delete(self, key: str) -> None:
        self.inner.delete(key)
        self.left -= 1
        if self.left == 0:
            raise Crash(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_sweeper_killed_mid_batch_resumes_without_errors(stores) -> None:
    store, blobs = stores
    d = Deployment(store, blobs)
    jobs = [d.job(audio=f"d{i}") for i in range(5)]
    config = RetentionConfig(**SHORT)
    later = utcnow() + 30 * DAY
    crashing: Any = CrashingBlobs(blobs, deletes=3)
    with pytest.raises(Crash):
        Retention(config, store, crashing).sweep(later)
    # The third object went but its row was not updated yet: the next sweep meets a
    # missing object and a row that still names it.
    assert jobs[2].audio_key and not blobs.exists(jobs[2].audio_key)
    assert store.get_job(jobs[2].id).audio_key == jobs[2].audio_key
    done = Retention(config, store, blobs).sweep(later)
    assert done.counts["job"] == 5
    assert all(d.row(j) is None for j in jobs)
    assert not any(blobs.exists(j.audio_key or "") for j in jobs)
    assert not any(blobs.exists(j.result_key or "") for j in jobs)
