"""Fair share at lease time (`serve_app.jobs.fairshare`), simulated without a store."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime, timedelta

from serve_app.jobs.fairshare import OTHER_TENANTS, FairShare, TenantQueues, tenant_depths
from serve_app.stores.records import TenantQueue

T0 = datetime(2030, 1, 1, tzinfo=UTC)


class Cluster:
    """`capacity` slots; every job takes one tick; leases as the tracker does each tick."""

    def __init__(self, capacity: int, fair: FairShare | None = None) -> None:
        self.capacity = capacity
        self.fair = fair or FairShare()
        self.queued: dict[str, deque[tuple[int, int]]] = {}  # tenant -> (priority, n)
        self.weights: dict[str, float] = {}
        self.running: list[tuple[str, int]] = []
        self.finished: list[tuple[str, int]] = []
        self.started: list[str] = []
        self._n = 0

    def submit(self, tenant: str, count: int, weight: float = 1.0, priority: int = 0) -> None:
        self.weights[tenant] = weight
        for _ in range(count):
            self.queued.setdefault(tenant, deque()).append((priority, self._n))
            self._n += 1

    def rows(self) -> list[TenantQueue]:
        rows = []
        for tenant in sorted(set(self.queued) | {t for t, _ in self.running}):
            by_priority: dict[int, int] = {}
            for priority, _ in self.queued.get(tenant, ()):
                by_priority[priority] = by_priority.get(priority, 0) + 1
            running = sum(1 for t, _ in self.running if t == tenant)
            for priority in sorted(by_priority or {0: 0}):
                n = by_priority.get(priority, 0)
                first = min(
                    (i for p, i in self.queued.get(tenant, ()) if p == priority), default=None
                )
                oldest = T0 + timedelta(seconds=first) if first is not None else None
                rows.append(
                    TenantQueue(tenant, priority, n, n, running, self.weights[tenant], oldest)
                )
                running = 0
        return rows

    def fill(self) -> None:
        queues = TenantQueues.load(self.rows())
        while len(self.running) < self.capacity:
            tenant = self.fair.pick(queues, self.capacity)
            if tenant is None:
                return
            jobs = self.queued[tenant]
            job = max(jobs, key=lambda j: (j[0], -j[1]))  # priority, then FIFO
            jobs.remove(job)
            if not jobs:
                del self.queued[tenant]
            queues.leased(tenant, job[0])
            self.running.append((tenant, job[1]))
            self.started.append(tenant)

    def tick(self) -> None:
        self.fill()
        done, self.running = self.running[:1], self.running[1:]  # one job ends per tick
        self.finished.extend(done)


def test_a_late_tenant_finishes_before_the_flood_is_half_done() -> None:
    cluster = Cluster(capacity=4)
    cluster.submit("a", 40)
    cluster.fill()
    cluster.submit("b", 4)
    while cluster.queued or cluster.running:
        cluster.tick()
    order = [t for t, _ in cluster.finished]
    a_20th = [i for i, t in enumerate(order) if t == "a"][19]
    assert max(i for i, t in enumerate(order) if t == "b") < a_20th
    assert order.count("a") == 40 and order.count("b") == 4


def test_alone_a_tenant_takes_the_whole_cluster() -> None:
    cluster = Cluster(capacity=4)
    cluster.submit("a", 10)
    cluster.fill()
    assert [t for t, _ in cluster.running] == ["a"] * 4


def test_weights_three_to_one_while_both_are_backlogged() -> None:
    cluster = Cluster(capacity=4)
    cluster.submit("a", 300, weight=3.0)
    cluster.submit("b", 300, weight=1.0)
    for _ in range(200):
        cluster.tick()
    window = [t for t, _ in cluster.finished[20:200]]
    ratio = window.count("a") / window.count("b")
    assert abs(ratio - 3.0) / 3.0 < 0.2, ratio


def test_weights_share_out_starts_too_with_fractional_weights() -> None:
    fair = FairShare()
    rows = [TenantQueue("a", 0, 50, 50, 0, 0.5, T0), TenantQueue("b", 0, 50, 50, 0, 1.5, T0)]
    queues = TenantQueues.load(rows)
    picks = []
    for _ in range(40):
        tenant = fair.pick(queues, capacity=1000)
        assert tenant is not None
        queues.leased(tenant, 0)
        picks.append(tenant)
    assert picks.count("b") == 3 * picks.count("a")


def test_ten_tenants_share_round_robin_and_nobody_waits_a_whole_flood() -> None:
    cluster = Cluster(capacity=4)
    for n in range(10):
        cluster.submit(f"t{n}", 20)
    for _ in range(40):
        cluster.tick()
    counts = {f"t{n}": 0 for n in range(10)}
    for tenant, _ in cluster.finished:
        counts[tenant] += 1
    assert max(counts.values()) - min(counts.values()) <= 1, counts


def test_priority_first_then_tenants_round_robin_within_it() -> None:
    cluster = Cluster(capacity=3)
    cluster.submit("a", 3, priority=0)
    cluster.submit("b", 2, priority=5)
    cluster.fill()
    assert sorted(t for t, _ in cluster.running) == ["a", "b", "b"]


def test_a_new_scheduler_still_caps_by_what_is_running() -> None:
    # A restarted tracker has no deficits, but the store says "a" holds 3 of 4 slots.
    rows = [TenantQueue("a", 0, 30, 30, 3, 1.0, T0), TenantQueue("b", 0, 5, 5, 0, 1.0, T0)]
    queues = TenantQueues.load(rows)
    fair = FairShare()
    assert fair.pick(queues, capacity=4) == "b"
    queues.leased("b", 0)
    assert fair.pick(queues, capacity=4) == "b"  # b holds 1, its share is 2


def test_nothing_due_picks_nobody() -> None:
    rows = [TenantQueue("a", 0, 2, 0, 1, 1.0, T0)]  # retries waiting, one running
    assert FairShare().pick(TenantQueues.load(rows), capacity=4) is None


def test_tenant_depths_bound_the_labels() -> None:
    rows = [TenantQueue(f"t{n}", 0, n, n, 1, 1.0, T0 - timedelta(seconds=n)) for n in range(6)]
    depths = tenant_depths(TenantQueues.load(rows), T0, max_tenants=2)
    assert [d.tenant for d in depths] == ["t5", "t4", OTHER_TENANTS]
    other = depths[-1]
    assert (other.queued, other.running, other.oldest_queued_age_s) == (6, 4, 3.0)
    assert depths[0].oldest_queued_age_s == 5.0
