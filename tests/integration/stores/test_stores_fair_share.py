"""Issue 18 on both job stores: per-tenant queue summaries and leasing one tenant's jobs."""

from __future__ import annotations

from datetime import timedelta

from serve_app.stores import JobStatus, JobStore
from tests.integration.stores.test_stores_jobs import T0, new_job


def _by_key(store: JobStore, tenant: str | None = None, at=T0) -> dict:
    return {(q.tenant, q.priority): q for q in store.tenant_queues(tenant, now=at)}


def test_tenant_queues_count_queued_due_running_and_weight(job_store: JobStore) -> None:
    a1 = job_store.create_job(new_job("a", weight=3.0))[0]
    job_store.create_job(new_job("a", weight=1.0))
    job_store.create_job(new_job("a", priority=5))
    job_store.create_job(new_job("b"))
    done = job_store.create_job(new_job("c"))[0]
    assert job_store.get_job(a1.id).weight == 3.0

    leased = job_store.lease_next("w1", 30, now=T0, tenant="a")
    assert leased is not None and leased.tenant == "a" and leased.priority == 5
    job_store.lease_next("w1", 30, now=T0, tenant="c")
    job_store.complete_job(done.id, "w1", "results/c.json")

    queues = _by_key(job_store)
    assert set(queues) == {("a", 0), ("a", 5), ("b", 0)}  # finished jobs are not counted
    a0 = queues[("a", 0)]
    assert (a0.queued, a0.due, a0.running, a0.weight) == (2, 2, 0, 3.0)
    assert a0.oldest_queued_at == a1.created_at
    a5 = queues[("a", 5)]
    assert (a5.queued, a5.running, a5.oldest_queued_at) == (0, 1, None)
    assert set(_by_key(job_store, "b")) == {("b", 0)}

    # An expired lease counts as queued again; a retry waiting for its time is not due.
    later = _by_key(job_store, "a", at=T0 + timedelta(seconds=31))
    assert (later[("a", 5)].queued, later[("a", 5)].running) == (1, 0)
    b = job_store.lease_next("w1", 30, now=T0, tenant="b")
    assert b is not None
    job_store.fail_job(b.id, "w1", "boom", retry_at=T0 + timedelta(seconds=60))
    b0 = _by_key(job_store, "b")[("b", 0)]
    assert (b0.queued, b0.due, b0.running) == (1, 0, 0)


def test_lease_for_a_tenant_is_priority_then_fifo_and_only_that_tenant(
    job_store: JobStore,
) -> None:
    a_low = job_store.create_job(new_job("a"))[0]
    job_store.create_job(new_job("b", priority=9))
    a_high = job_store.create_job(new_job("a", priority=3))[0]
    a_low2 = job_store.create_job(new_job("a"))[0]
    order = []
    while (job := job_store.lease_next("w1", 60, now=T0, tenant="a")) is not None:
        assert job.status is JobStatus.RUNNING and job.attempts == 1
        order.append(job.id)
    assert order == [a_high.id, a_low.id, a_low2.id]
    assert job_store.lease_next("w1", 60, now=T0, tenant="nobody") is None
    b = job_store.lease_next("w1", 60, now=T0)
    assert b is not None and b.tenant == "b"
