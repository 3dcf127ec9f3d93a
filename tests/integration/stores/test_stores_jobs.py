"""One job-store suite, run against SQLite and a real Postgres."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from serve_app.stores import (
    Conflict,
    JobStatus,
    JobStore,
    NewJob,
    NotFound,
    StoreUnavailable,
    open_job_store,
    options_hash,
)
from serve_app.stores.job_store import load_migrations

T0 = datetime(2030, 1, 1, tzinfo=UTC)  # after every real created_at, so new jobs are due


def new_job(tenant: str = "acme", **overrides: object) -> NewJob:
    fields: dict[str, object] = {"tenant": tenant, "model": "tiny.en", "options": {"beam": 5}}
    fields.update(overrides)
    return NewJob(**fields)  # type: ignore[arg-type]


def test_migrate_is_idempotent_and_safe_concurrently(empty_job_store_url: str) -> None:
    # Two stores migrating the same empty database at once: exactly one applies every version.
    barrier = threading.Barrier(2)

    def migrate() -> list[int]:
        with open_job_store(empty_job_store_url) as store:
            barrier.wait(timeout=30)
            return store.migrate()

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: migrate(), range(2)))
    with open_job_store(empty_job_store_url) as store:
        versions = [m.version for m in load_migrations(store.dialect)]
    assert 1 in versions and sorted(results) == [[], versions]
    with open_job_store(empty_job_store_url) as store:
        assert store.migrate() == []
        assert store.count_by_status() == dict.fromkeys(JobStatus, 0)


def test_create_and_get_round_trips_fields(job_store: JobStore) -> None:
    new = new_job(
        options={"beam": 5, "language": "en", "words": True},
        audio_key="audio/abc",
        audio_sha256="abc",
        webhook_url="https://example.invalid/hook",
        metadata={"source": "test", "nested": {"a": [1, 2]}},
        priority=7,
        max_attempts=5,
    )
    job, created = job_store.create_job(new)
    assert created
    assert job == job_store.get_job(new.id) == job_store.get_job(new.id, tenant="acme")
    assert job.status is JobStatus.QUEUED and not job.status.is_terminal
    assert job.options == {"beam": 5, "language": "en", "words": True}
    assert job.metadata == {"source": "test", "nested": {"a": [1, 2]}}
    assert job.options_hash == options_hash("tiny.en", job.options)
    assert (job.priority, job.max_attempts, job.attempts, job.done_chunks) == (7, 5, 0, 0)
    assert job.created_at.tzinfo is not None and job.started_at is None
    with pytest.raises(NotFound):
        job_store.get_job("no-such-job")


def test_idempotency_key_same_hash_returns_existing(job_store: JobStore) -> None:
    first, created = job_store.create_job(new_job(idempotency_key="k1", request_hash="h1"))
    again, created_again = job_store.create_job(new_job(idempotency_key="k1", request_hash="h1"))
    assert created and not created_again
    assert again.id == first.id
    # The key is scoped to the tenant: another tenant gets its own job.
    other, created_other = job_store.create_job(
        new_job("globex", idempotency_key="k1", request_hash="h1")
    )
    assert created_other and other.id != first.id


def test_idempotency_key_different_hash_conflicts(job_store: JobStore) -> None:
    job_store.create_job(new_job(idempotency_key="k1", request_hash="h1"))
    with pytest.raises(Conflict):
        job_store.create_job(new_job(idempotency_key="k1", request_hash="h2"))
    assert len(job_store.list_jobs("acme")) == 1


def test_tenant_isolation(job_store: JobStore) -> None:
    job, _ = job_store.create_job(new_job("acme"))
    with pytest.raises(NotFound):
        job_store.get_job(job.id, tenant="globex")
    with pytest.raises(NotFound):
        job_store.cancel_job(job.id, tenant="globex")
    assert job_store.get_job(job.id).status is JobStatus.QUEUED
    assert job_store.list_jobs("globex") == []
    with pytest.raises(NotFound):
        job_store.list_jobs("globex", after=job.id)


def test_list_jobs_newest_first_with_status_filter_and_pages(job_store: JobStore) -> None:
    ids = [job_store.create_job(new_job())[0].id for _ in range(5)]
    job_store.cancel_job(ids[1], "acme")
    listed = job_store.list_jobs("acme")
    assert [j.id for j in listed] == ids[::-1]
    page1 = job_store.list_jobs("acme", limit=2)
    page2 = job_store.list_jobs("acme", limit=2, after=page1[-1].id)
    page3 = job_store.list_jobs("acme", limit=2, after=page2[-1].id)
    assert [j.id for j in page1 + page2 + page3] == ids[::-1]
    cancelled = job_store.list_jobs("acme", status=JobStatus.CANCELLED)
    assert [j.id for j in cancelled] == [ids[1]]


def test_find_succeeded_by_audio(job_store: JobStore) -> None:
    job, _ = job_store.create_job(new_job(audio_sha256="sha-a"))
    digest = options_hash("tiny.en", {"beam": 5})
    assert job_store.find_succeeded_by_audio("acme", "sha-a", digest) is None
    leased = job_store.lease_next("w1", 60)
    assert leased is not None and leased.id == job.id
    job_store.complete_job(job.id, "w1", "results/a.json")
    found = job_store.find_succeeded_by_audio("acme", "sha-a", digest)
    assert found is not None and found.id == job.id
    assert job_store.find_succeeded_by_audio("globex", "sha-a", digest) is None
    assert job_store.find_succeeded_by_audio("acme", "sha-a", options_hash("base", {})) is None


def test_lease_order_is_priority_then_fifo(job_store: JobStore) -> None:
    low1 = job_store.create_job(new_job(priority=0))[0]
    high1 = job_store.create_job(new_job(priority=5))[0]
    low2 = job_store.create_job(new_job(priority=0))[0]
    high2 = job_store.create_job(new_job(priority=5))[0]
    order = []
    while (job := job_store.lease_next("w1", 60, now=T0)) is not None:
        assert job.status is JobStatus.RUNNING and job.lease_owner == "w1"
        assert job.attempts == 1 and job.started_at is not None
        assert job.lease_expires_at == T0 + timedelta(seconds=60)
        order.append(job.id)
    assert order == [high1.id, high2.id, low1.id, low2.id]


def test_concurrent_leases_never_hand_a_job_to_two_owners(job_store_url: str) -> None:
    with open_job_store(job_store_url) as store:
        expected = {store.create_job(new_job())[0].id for _ in range(24)}
    start = threading.Barrier(4)

    def worker(owner: str) -> list[str]:
        got = []
        # Each worker has its own store (its own connections), like separate processes.
        with open_job_store(job_store_url) as store:
            start.wait(timeout=30)
            while (job := store.lease_next(owner, 60)) is not None:
                assert job.lease_owner == owner
                got.append(job.id)
        return got

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(worker, [f"w{i}" for i in range(4)]))
    leased = [job_id for got in results for job_id in got]
    assert len(leased) == len(set(leased)) == len(expected)
    assert set(leased) == expected


def test_expired_lease_is_leased_again(job_store: JobStore) -> None:
    job, _ = job_store.create_job(new_job())
    assert job_store.lease_next("w1", 30, now=T0) is not None
    assert job_store.lease_next("w2", 30, now=T0 + timedelta(seconds=10)) is None
    assert job_store.renew_lease(job.id, "w1", 30, now=T0 + timedelta(seconds=10))
    assert job_store.lease_next("w2", 30, now=T0 + timedelta(seconds=39)) is None
    stolen = job_store.lease_next("w2", 30, now=T0 + timedelta(seconds=41))
    assert stolen is not None and stolen.id == job.id
    assert (stolen.lease_owner, stolen.attempts) == ("w2", 2)
    # The first worker has lost the job: it can neither renew nor finish it.
    assert not job_store.renew_lease(job.id, "w1", 30)
    assert job_store.complete_job(job.id, "w1", "results/x") is None
    assert job_store.fail_job(job.id, "w1", "boom") is None
    done = job_store.complete_job(job.id, "w2", "results/x")
    assert done is not None and done.status is JobStatus.SUCCEEDED


def test_retry_is_not_leased_before_next_attempt_at(job_store: JobStore) -> None:
    job, _ = job_store.create_job(new_job())
    assert job_store.lease_next("w1", 30, now=T0) is not None
    retried = job_store.fail_job(
        job.id, "w1", "decoder crashed", retry_at=T0 + timedelta(seconds=60)
    )
    assert retried is not None
    assert retried.status is JobStatus.QUEUED and retried.error == "decoder crashed"
    assert retried.lease_owner is None and retried.finished_at is None
    assert job_store.lease_next("w2", 30, now=T0 + timedelta(seconds=59)) is None
    again = job_store.lease_next("w2", 30, now=T0 + timedelta(seconds=60))
    assert again is not None and again.id == job.id and again.attempts == 2


def test_checkpoints_are_idempotent_and_count_done_chunks(job_store: JobStore) -> None:
    job, _ = job_store.create_job(new_job())
    job_store.set_total_chunks(job.id, 3)
    assert job_store.save_checkpoint(job.id, 1, {"text": "world"}, computed_by="w1")
    assert job_store.save_checkpoint(job.id, 0, {"text": "hello"})
    assert not job_store.save_checkpoint(job.id, 1, {"text": "other"}, computed_by="w2")
    refreshed = job_store.get_job(job.id)
    assert (refreshed.total_chunks, refreshed.done_chunks) == (3, 2)
    assert refreshed.progress == pytest.approx(2 / 3)
    checkpoints = job_store.load_checkpoints(job.id)
    assert [(c.chunk_index, c.result, c.computed_by) for c in checkpoints] == [
        (0, {"text": "hello"}, None),
        (1, {"text": "world"}, "w1"),  # the first write wins
    ]
    with pytest.raises(NotFound):
        job_store.save_checkpoint("no-such-job", 0, {})
    with pytest.raises(NotFound):
        job_store.set_total_chunks("no-such-job", 1)


def test_stages_are_checkpointed_once_and_go_with_the_result(job_store: JobStore) -> None:
    job, _ = job_store.create_job(new_job())
    assert job_store.load_stages(job.id) == {}
    assert job_store.save_stage(job.id, "diarization", {"starts": [0.0, 0.8]}, "w1")
    assert not job_store.save_stage(job.id, "diarization", {"starts": []}, "w2")
    assert job_store.load_stages(job.id) == {"diarization": {"starts": [0.0, 0.8]}}
    assert job_store.get_job(job.id).done_chunks == 0  # stages are not chunks
    with pytest.raises(NotFound):
        job_store.save_stage("no-such-job", "diarization", {})
    job_store.clear_result(job.id)
    assert job_store.load_stages(job.id) == {}


def test_complete_and_fail_are_terminal(job_store: JobStore) -> None:
    ok, _ = job_store.create_job(new_job(priority=1))
    bad, _ = job_store.create_job(new_job())
    assert job_store.complete_job(ok.id, "w1", "results/ok") is None  # not leased yet
    job_store.lease_next("w1", 60)
    job_store.lease_next("w1", 60)
    done = job_store.complete_job(ok.id, "w1", "results/ok")
    assert done is not None and done.status is JobStatus.SUCCEEDED and done.status.is_terminal
    assert done.result_key == "results/ok" and done.finished_at is not None
    assert done.lease_owner is None and done.lease_expires_at is None
    failed = job_store.fail_job(bad.id, "w1", "undecodable audio")
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.error == "undecodable audio" and failed.finished_at is not None
    assert job_store.lease_next("w2", 60) is None
    assert job_store.cancel_job(done.id, "acme") == done  # terminal: unchanged
    assert job_store.complete_job(ok.id, "w1", "results/again") is None


def test_cancel_queued_and_running_jobs(job_store: JobStore) -> None:
    queued, _ = job_store.create_job(new_job())
    running, _ = job_store.create_job(new_job(priority=9))
    assert job_store.lease_next("w1", 60) == job_store.get_job(running.id)
    cancelled = job_store.cancel_job(queued.id, "acme")
    assert cancelled.status is JobStatus.CANCELLED and cancelled.finished_at is not None
    cancelled_running = job_store.cancel_job(running.id, tenant=None)
    assert cancelled_running.status is JobStatus.CANCELLED
    # The worker notices on its next renewal, and cannot overwrite the cancellation.
    assert not job_store.renew_lease(running.id, "w1", 60)
    assert job_store.complete_job(running.id, "w1", "results/x") is None
    assert job_store.get_job(running.id).status is JobStatus.CANCELLED
    assert job_store.lease_next("w2", 60) is None


def test_release_lease_requeues_without_using_an_attempt(job_store: JobStore) -> None:
    job, _ = job_store.create_job(new_job())
    job_store.lease_next("w1", 60)
    assert not job_store.release_lease(job.id, "someone-else")
    assert job_store.release_lease(job.id, "w1")
    released = job_store.get_job(job.id)
    assert released.status is JobStatus.QUEUED and released.attempts == 0
    again = job_store.lease_next("w2", 60)
    assert again is not None and again.attempts == 1 and again.lease_owner == "w2"


def test_webhook_deliveries_and_status_counts(job_store: JobStore) -> None:
    job, _ = job_store.create_job(new_job())
    job_store.create_job(new_job())
    job_store.record_webhook_delivery(job.id, 1, 503, ok=False, error="unavailable")
    job_store.record_webhook_delivery(job.id, 2, 200, ok=True)
    deliveries = job_store.list_webhook_deliveries(job.id)
    assert [(d.attempt, d.status_code, d.ok, d.error) for d in deliveries] == [
        (1, 503, False, "unavailable"),
        (2, 200, True, None),
    ]
    with pytest.raises(NotFound):
        job_store.record_webhook_delivery("no-such-job", 1, None, ok=False, error="dns")
    job_store.lease_next("w1", 60)
    counts = job_store.count_by_status()
    assert counts[JobStatus.QUEUED] == 1 and counts[JobStatus.RUNNING] == 1
    assert sum(counts.values()) == 2


def test_api_keys(job_store: JobStore) -> None:
    key = job_store.create_api_key("acme", "sha-of-secret", "ci")
    assert job_store.get_api_key_by_hash("sha-of-secret") == key
    with pytest.raises(Conflict):
        job_store.create_api_key("globex", "sha-of-secret", "dup")
    assert not job_store.revoke_api_key(key.id, "globex")
    assert job_store.revoke_api_key(key.id, "acme")
    assert not job_store.revoke_api_key(key.id, "acme")
    assert job_store.get_api_key_by_hash("sha-of-secret") is None
    [listed] = job_store.list_api_keys("acme")
    assert listed.id == key.id and listed.revoked_at is not None
    assert job_store.list_api_keys("globex") == []


def test_unreachable_postgres_raises_store_unavailable() -> None:
    from serve_app.stores.guard import StoreTuning
    from serve_app.stores.postgres_store import PostgresJobStore
    from tests.fixtures.processes import free_port

    with pytest.raises(StoreUnavailable):
        url = f"postgresql://nobody@127.0.0.1:{free_port()}/x"
        PostgresJobStore(url, tuning=StoreTuning(open_timeout_s=1))


@pytest.mark.parametrize("url", ["mysql://x/y", "sqlite://relative.db", "sqlite:///"])
def test_bad_database_urls_are_rejected(url: str) -> None:
    with pytest.raises(ValueError):
        open_job_store(url)


def test_sqlite_memory_url() -> None:
    with open_job_store("sqlite:///:memory:", migrate=True) as store:
        job, created = store.create_job(new_job())
        assert created and store.get_job(job.id).id == job.id
