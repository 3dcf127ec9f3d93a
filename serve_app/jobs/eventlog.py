"""Per-job progress events kept by the tracker for long-polling SSE streams."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any

TERMINAL_EVENTS = frozenset({"done"})


class JobEventLog:
    """Ordered events per job; waiters wake when a job gets a new event."""

    def __init__(self, max_jobs: int = 10_000, max_events_per_job: int = 2_000) -> None:
        self._events: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._changed: dict[str, asyncio.Event] = {}
        self._max_jobs = max_jobs
        self._max_events = max_events_per_job

    def append(self, job_id: str, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        events = self._events.setdefault(job_id, [])
        self._events.move_to_end(job_id)
        seq = events[-1]["seq"] + 1 if events else 1
        event = {"seq": seq, "event": kind, "job_id": job_id, "ts": time.time(), **data}
        events.append(event)
        if len(events) > self._max_events:
            del events[: len(events) - self._max_events]
        while len(self._events) > self._max_jobs:
            old, _ = self._events.popitem(last=False)
            self._changed.pop(old, None)
        waiter = self._changed.pop(job_id, None)
        if waiter is not None:
            waiter.set()
        return event

    async def since(self, job_id: str, after: int, timeout_s: float) -> list[dict[str, Any]]:
        """Events with seq > after; waits up to `timeout_s` for one if there are none."""
        found = [e for e in self._events.get(job_id, []) if e["seq"] > after]
        if found or timeout_s <= 0:
            return found
        waiter = self._changed.setdefault(job_id, asyncio.Event())
        try:
            await asyncio.wait_for(waiter.wait(), timeout_s)
        except TimeoutError:
            return []
        return [e for e in self._events.get(job_id, []) if e["seq"] > after]
