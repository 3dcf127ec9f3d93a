"""Weighted fair sharing of the tracker's job slots across tenants, decided at lease time.

`FairShare.pick` names the tenant whose job the tracker leases next:

- **Priority first.** Only tenants with a due job at the highest priority present compete;
  within a tenant the store leases priority, then FIFO (`JobStore.lease_next(tenant=...)`).
- **Share cap.** A tenant's share is `capacity * weight / sum(weights)` over the tenants
  with queued or running jobs. While a tenant at or over its share has others waiting,
  those others go first; alone (or when every waiting tenant is over its share) it takes
  every free slot, so the cluster never idles while jobs wait.
- **Deficit round-robin** among the rest: on each visit a tenant earns `weight` leases;
  one lease costs 1. Weights 3:1 give three leases to one for as long as both wait.

Counts come from the store (`TenantQueues.load`), so a new tracker, which starts with empty
deficits, still caps each tenant by what is running right now: the share holds after a
restart. Nothing here touches the store, Ray or the replicas (chunks already in a replica's
batcher keep their priority order; no cross-tenant state is needed there).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from serve_app.stores.records import TenantQueue

OTHER_TENANTS = "_other"


@dataclass
class TenantLoad:
    """One tenant's runnable work, summed over priorities."""

    tenant: str
    weight: float = 1.0
    running: int = 0
    queued: int = 0
    due_by_priority: dict[int, int] = field(default_factory=dict)
    oldest_queued_at: datetime | None = None

    @property
    def due(self) -> int:
        return sum(self.due_by_priority.values())

    def top_priority(self) -> int | None:
        due = [p for p, n in self.due_by_priority.items() if n > 0]
        return max(due) if due else None


@dataclass
class TenantQueues:
    """Per-tenant loads built from `JobStore.tenant_queues`, updated as leases are taken."""

    loads: dict[str, TenantLoad] = field(default_factory=dict)

    @classmethod
    def load(cls, rows: Iterable[TenantQueue]) -> TenantQueues:
        loads: dict[str, TenantLoad] = {}
        for row in rows:
            load = loads.setdefault(row.tenant, TenantLoad(row.tenant, weight=row.weight))
            load.weight = max(load.weight, row.weight)
            load.running += row.running
            load.queued += row.queued
            if row.due:
                load.due_by_priority[row.priority] = (
                    load.due_by_priority.get(row.priority, 0) + row.due
                )
            if row.oldest_queued_at is not None and (
                load.oldest_queued_at is None or row.oldest_queued_at < load.oldest_queued_at
            ):
                load.oldest_queued_at = row.oldest_queued_at
        return cls(loads)

    def leased(self, tenant: str, priority: int) -> None:
        """A job of `tenant` at `priority` was leased: one less due, one more running."""
        load = self.loads.setdefault(tenant, TenantLoad(tenant))
        left = load.due_by_priority.get(priority, 0) - 1
        if left > 0:
            load.due_by_priority[priority] = left
        else:
            load.due_by_priority.pop(priority, None)
        load.queued = max(0, load.queued - 1)
        load.running += 1

    def drained(self, tenant: str) -> None:
        """The store had no due job of `tenant` after all (another worker took it)."""
        if tenant in self.loads:
            self.loads[tenant].due_by_priority.clear()

    def shares(self, capacity: int) -> dict[str, float]:
        """Each active tenant's share of `capacity` slots, by weight."""
        active = {t: ld for t, ld in self.loads.items() if ld.running or ld.queued}
        total = sum(ld.weight for ld in active.values())
        return {t: capacity * ld.weight / total for t, ld in active.items()} if total else {}


@dataclass(frozen=True)
class TenantDepth:
    """What the per-tenant gauges show: one tenant, or `_other` for the rest summed."""

    tenant: str
    queued: int
    running: int
    oldest_queued_age_s: float


def tenant_depths(queues: TenantQueues, now: datetime, max_tenants: int) -> list[TenantDepth]:
    """Gauge values with at most `max_tenants` named tenants (the busiest), the rest summed."""
    loads = sorted(
        (ld for ld in queues.loads.values() if ld.running or ld.queued),
        key=lambda ld: (-(ld.queued + ld.running), ld.tenant),
    )

    def age(ld: TenantLoad) -> float:
        return max(0.0, (now - ld.oldest_queued_at).total_seconds()) if ld.oldest_queued_at else 0.0

    named = [TenantDepth(ld.tenant, ld.queued, ld.running, age(ld)) for ld in loads[:max_tenants]]
    rest = loads[max_tenants:]
    if rest:
        named.append(
            TenantDepth(
                OTHER_TENANTS,
                sum(ld.queued for ld in rest),
                sum(ld.running for ld in rest),
                max(age(ld) for ld in rest),
            )
        )
    return named


class FairShare:
    """Deficit round-robin over tenants with a share cap; state is only the ring and deficits."""

    def __init__(self) -> None:
        self._ring: list[str] = []
        self._cursor = 0
        self._credited = False  # the tenant under the cursor got its quantum this visit
        self._deficit: dict[str, float] = {}

    def pick(self, queues: TenantQueues, capacity: int) -> str | None:
        """The tenant to lease from next, or None when nothing is due."""
        top = max(
            (p for ld in queues.loads.values() if (p := ld.top_priority()) is not None),
            default=None,
        )
        if top is None:
            return None
        waiting = [t for t, ld in queues.loads.items() if ld.top_priority() == top]
        shares = queues.shares(capacity)
        under = [t for t in waiting if queues.loads[t].running < shares.get(t, capacity)]
        eligible = set(under or waiting)  # over its share only when nobody else waits
        self._sync_ring(queues)
        weights = {t: queues.loads[t].weight for t in eligible}
        # Each full turn adds at least min(weight) to every eligible deficit.
        turns = len(self._ring) * (math.ceil(1 / min(weights.values())) + 1)
        for _ in range(turns + 1):
            tenant = self._ring[self._cursor]
            if tenant in eligible:
                if not self._credited:
                    # Capped, so a turn spent over its share banks nothing for later.
                    earned = self._deficit.get(tenant, 0.0) + weights[tenant]
                    self._deficit[tenant] = min(earned, weights[tenant] + 1)
                    self._credited = True
                if self._deficit[tenant] >= 1:
                    self._deficit[tenant] -= 1
                    return tenant
            self._cursor = (self._cursor + 1) % len(self._ring)
            self._credited = False
        return min(eligible)  # unreachable with positive weights; keeps pick total

    def _sync_ring(self, queues: TenantQueues) -> None:
        """Drop tenants with nothing due (and their deficit), append newcomers oldest first."""
        current = self._ring[self._cursor] if self._ring else None
        due = {t for t, ld in queues.loads.items() if ld.due}
        self._ring = [t for t in self._ring if t in due]
        for tenant in set(self._deficit) - set(self._ring):
            del self._deficit[tenant]

        def arrival(tenant: str) -> tuple[bool, datetime | None, str]:
            oldest = queues.loads[tenant].oldest_queued_at
            return oldest is None, oldest, tenant

        self._ring.extend(sorted(due - set(self._ring), key=arrival))
        if current in self._ring:
            self._cursor = self._ring.index(current)
        else:  # the tenant under the cursor left: the next one starts a fresh visit
            self._cursor, self._credited = 0, False
