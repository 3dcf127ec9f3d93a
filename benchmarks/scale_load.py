"""Load for `benchmarks.scale`: tenants with their own API keys submitting jobs open loop,
and per-tenant polling of `GET /v1/jobs` until every accepted job is terminal.

Each job's audio is made unique (`clips.unique_wav`): the service dedupes by audio hash.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import httpx

from benchmarks.clips import Clip, unique_wav
from benchmarks.loadgen import latency_summary, make_client

TERMINAL = {"succeeded", "failed", "cancelled"}


class Bench:
    """The deployed app, its keys (one per tenant) and a job counter for unique audio."""

    def __init__(self, url: str, db_url: str, clip: Clip) -> None:
        self.url, self.db_url, self.clip = url, db_url, clip
        self.keys: dict[str, str] = {}
        self._next = 0

    def key(self, tenant: str) -> str:
        if tenant not in self.keys:
            from serve_app.security.keys import create_key
            from serve_app.stores import open_job_store

            with open_job_store(self.db_url) as store:
                self.keys[tenant], _ = create_key(store, tenant, tenant)
        return self.keys[tenant]

    def audio(self) -> bytes:
        self._next += 1
        return unique_wav(self.clip.data, self._next)


async def _post(client: httpx.AsyncClient, bench: Bench, tenant: str, t0: float) -> dict[str, Any]:
    started = time.perf_counter()
    record: dict[str, Any] = {"tenant": tenant, "at_s": started - t0, "id": None}
    try:
        response = await client.post(
            "/v1/jobs",
            files={"file": ("job.wav", bench.audio())},
            headers={"authorization": f"Bearer {bench.key(tenant)}"},
        )
        record["status"] = response.status_code
        if response.status_code == 202:
            record["id"] = response.json()["id"]
    except httpx.HTTPError as exc:
        record["status"], record["error"] = 0, f"{type(exc).__name__}: {exc}"
    record["latency_s"] = time.perf_counter() - started
    return record


async def submit_open_loop(
    bench: Bench, tenants: list[str], total: int, rate: float, t0: float | None = None
) -> list[dict[str, Any]]:
    """`total` submissions at `rate`/s, round-robin over `tenants`, never waiting for answers."""
    for tenant in tenants:
        bench.key(tenant)  # created before the clock starts
    async with make_client(bench.url, 256, timeout_s=120) as client:
        start = time.perf_counter()
        t0 = start if t0 is None else t0
        tasks = []
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tenant = tenants[i % len(tenants)]
            tasks.append(asyncio.ensure_future(_post(client, bench, tenant, t0)))
        return list(await asyncio.gather(*tasks))


async def wait_tenants(
    bench: Bench, submitted: list[dict[str, Any]], timeout_s: float
) -> dict[str, dict[str, Any]]:
    """Poll each tenant's `GET /v1/jobs` until every accepted job is terminal (or timeout).

    Returns job id → the job's last view; an accepted job the list never shows is absent.
    """
    wanted: dict[str, set[str]] = {}
    for r in submitted:
        if r["id"]:
            wanted.setdefault(r["tenant"], set()).add(r["id"])
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    async with make_client(bench.url, 16, timeout_s=60) as client:
        while time.monotonic() < deadline:
            for tenant in wanted:
                seen.update(await _list_all(client, bench.key(tenant)))
            pending = [i for ids in wanted.values() for i in ids if _open(seen.get(i))]
            if not pending:
                break
            await asyncio.sleep(2.0)  # one list call per tenant: light on the ingress
    return seen


def _open(job: dict[str, Any] | None) -> bool:
    return job is None or job["status"] not in TERMINAL


async def _list_all(client: httpx.AsyncClient, key: str) -> dict[str, dict[str, Any]]:
    jobs: dict[str, dict[str, Any]] = {}
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200, **({"after": after} if after else {})}
        response = await client.get(
            "/v1/jobs", params=params, headers={"authorization": f"Bearer {key}"}
        )
        response.raise_for_status()
        page = response.json()
        jobs.update({j["id"]: j for j in page["data"]})
        if not page["has_more"]:
            return jobs
        after = page["next_after"]


def outcomes(
    submitted: list[dict[str, Any]], seen: dict[str, dict[str, Any]], tracker: dict[str, Any]
) -> dict[str, Any]:
    accepted = [r["id"] for r in submitted if r["id"]]
    status = {"succeeded": 0, "failed": 0, "cancelled": 0, "unfinished": 0, "lost": 0}
    for job_id in accepted:
        job = seen.get(job_id)
        key = (
            "lost" if job is None else job["status"] if job["status"] in TERMINAL else "unfinished"
        )
        status[key] += 1
    extra_rows = len(seen) - len(set(accepted) & set(seen))
    status["duplicated"] = (
        len(accepted) - len(set(accepted)) + extra_rows + tracker.get("duplicate_checkpoints", 0)
    )
    status["not_accepted"] = len(submitted) - len(accepted)
    return status


def _finish_s(job: dict[str, Any], t0_wall: datetime) -> float:
    return (datetime.fromisoformat(job["finished_at"]) - t0_wall).total_seconds()


def completion(
    submitted: list[dict[str, Any]], seen: dict[str, dict[str, Any]], t0_wall: datetime
) -> dict[str, dict[str, Any]]:
    """Per tenant: first submit, last completion, and completion time of its last job."""
    out: dict[str, dict[str, Any]] = {}
    for tenant in sorted({r["tenant"] for r in submitted}):
        mine = [r for r in submitted if r["tenant"] == tenant]
        done = [
            _finish_s(seen[r["id"]], t0_wall)
            for r in mine
            if r["id"] in seen and seen[r["id"]].get("finished_at")
        ]
        first = min(r["at_s"] for r in mine)
        out[tenant] = {
            "jobs": len(mine),
            "first_submit_s": round(first, 2),
            "last_done_s": round(max(done), 2) if done else None,
            "completion_s": round(max(done) - first, 2) if done else None,
        }
    return out


def submit_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    codes: dict[str, int] = {}
    for r in records:
        codes[str(r["status"])] = codes.get(str(r["status"]), 0) + 1
    ok = [r["latency_s"] for r in records if r["status"] == 202]
    return {"n": len(records), "status_codes": codes, "latency_s": latency_summary(ok)}


def tracker_stats(config: Any) -> dict[str, Any]:
    import ray

    try:
        actor = ray.get_actor(config.jobs.tracker_name, namespace=config.jobs.namespace)
        stats = ray.get(actor.stats.remote(), timeout=30)
    except Exception as exc:  # the figures are optional; the run is not
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "worker_id": stats.worker_id,
        "chunks_computed": stats.chunks_computed,
        "duplicate_checkpoints": stats.duplicate_checkpoints,
        "outcomes": stats.outcomes,
    }
