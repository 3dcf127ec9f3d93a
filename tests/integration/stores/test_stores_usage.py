"""Vocabularies and usage counters (issue 15), run against SQLite and a real Postgres."""

from __future__ import annotations

import pytest

from serve_app.stores import JobStatus, JobStore, NewJob, NotFound, open_job_store
from serve_app.stores.records import UsageCharge


def test_vocabularies_are_tenant_scoped(job_store: JobStore) -> None:
    spellings = [{"from": ["comfy eye"], "to": "ComfyUI"}]
    created = job_store.create_vocabulary("acme", "demo", ["ComfyUI"], spellings)
    assert created.id.startswith("voc_")
    got = job_store.get_vocabulary(created.id, "acme")
    assert (got.terms, got.spellings, got.name) == (["ComfyUI"], spellings, "demo")
    assert [v.id for v in job_store.list_vocabularies("acme")] == [created.id]
    assert job_store.list_vocabularies("globex") == []
    with pytest.raises(NotFound):
        job_store.get_vocabulary(created.id, "globex")
    with pytest.raises(NotFound):
        job_store.delete_vocabulary(created.id, "globex")
    job_store.delete_vocabulary(created.id, "acme")
    with pytest.raises(NotFound):
        job_store.get_vocabulary(created.id, "acme")


def test_usage_adds_up_and_survives_reopening(job_store_url: str) -> None:
    with open_job_store(job_store_url) as store:
        store.add_usage("acme", "k1", "tiny.en", "sync", 3.25, "2030-01-01")
        store.add_usage("acme", "k1", "tiny.en", "sync", 1.5, "2030-01-01")
        store.add_usage("acme", "k1", "base", "job", 10.0, "2030-01-01")
        store.add_usage("acme", "k2", "tiny.en", "live", 2.0, "2030-01-02")
        store.add_usage("globex", "k3", "tiny.en", "sync", 99.0, "2030-01-01")
    # A new store over the same database (a restarted service) sees the same figures.
    with open_job_store(job_store_url) as store:
        rows = store.usage_between("acme", "2030-01-01", "2030-01-02")
        assert {(r.key_id, r.day, r.model, r.source): (r.seconds, r.requests) for r in rows} == {
            ("k1", "2030-01-01", "tiny.en", "sync"): (4.75, 2),
            ("k1", "2030-01-01", "base", "job"): (10.0, 1),
            ("k2", "2030-01-02", "tiny.en", "live"): (2.0, 1),
        }
        assert [r.day for r in store.usage_between("acme", "2030-01-02", "2030-01-09")] == [
            "2030-01-02"
        ]
        assert store.key_usage_on("k1", "2030-01-01") == pytest.approx(14.75)
        assert store.key_usage_on("k1", "2030-01-02") == 0.0


def test_a_completion_meters_its_job_once_in_the_same_write(job_store: JobStore) -> None:
    job, _ = job_store.create_job(NewJob(tenant="acme", model="tiny.en", key_id="k1"))
    charge = UsageCharge("tiny.en", "job", 5.5, "2030-02-01")
    assert job_store.lease_next("w1", 30) is not None
    # A worker that no longer holds the job charges nothing.
    assert job_store.complete_job(job.id, "w2", "results/x", charge) is None
    assert job_store.usage_between("acme", "2030-02-01", "2030-02-01") == []
    done = job_store.complete_job(job.id, "w1", "results/x", charge)
    assert done is not None and done.status is JobStatus.SUCCEEDED
    # The job reads succeeded only once the usage is there, and a repeat adds nothing.
    assert job_store.complete_job(job.id, "w1", "results/x", charge) is None
    [row] = job_store.usage_between("acme", "2030-02-01", "2030-02-01")
    assert (row.key_id, row.model, row.source, row.seconds, row.requests) == (
        "k1",
        "tiny.en",
        "job",
        5.5,
        1,
    )
