"""Issue 18 acceptance: fair share across tenants on the real stack, auth on, real keys.

tiny.en, a 3.5 s clip per job, 8 job slots. Each job gets its own Idempotency-Key, so equal
audio is never deduplicated into an earlier job.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_security_helpers import SecurityApp, deploy_security_app

pytestmark = pytest.mark.integration

OVERRIDES = {
    "auth": {"enabled": True},
    # Weights apply whether or not the rate limits are enforced.
    "rate_limit": {"enabled": False, "per_key": {"heavy": {"weight": 3.0}}},
    "jobs": {"max_concurrent_jobs": 8, "poll_interval_s": 0.3},
    # Packing on: a tenant's short clips share encoder windows, which keeps the test short.
    "models": [
        {
            "name": "tiny.en",
            "num_cpus": 0.3,
            "cpu_threads": 2,
            "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.1},
            "packing": {"mode": "on"},
        }
    ],
}


@pytest.fixture(scope="module")
def app(request, ray_instance, model_cache) -> Iterator[SecurityApp]:
    yield from deploy_security_app(request, ray_instance, model_cache, "fair", OVERRIDES)


def _submit(client: httpx.Client, path: Path, n: int) -> list[str]:
    ids = []
    data = path.read_bytes()
    for _ in range(n):
        response = client.post(
            "/v1/jobs",
            files={"file": (path.name, data)},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


def _drain(client: httpx.Client, ids: list[str], timeout: float = 300) -> list[dict[str, Any]]:
    """Every job of the tenant once all of `ids` are terminal (one list call per poll)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = client.get("/v1/jobs", params={"limit": 200}).json()["data"]
        by_id = {j["id"]: j for j in jobs}
        if all(by_id[i]["status"] in ("succeeded", "failed", "cancelled") for i in ids):
            return [by_id[i] for i in ids]
        time.sleep(0.5)
    raise AssertionError("jobs did not drain in time")


def _finished(job: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(job["finished_at"])


def test_a_late_tenant_is_served_before_the_flood_is_half_done(app, data_dir):
    clip = data_dir / "weather.wav"
    tenant_a, tenant_b = f"flood-{uuid.uuid4().hex[:6]}", f"late-{uuid.uuid4().hex[:6]}"
    with (
        app.client(app.create_key(tenant_a, "a")) as a,
        app.client(app.create_key(tenant_b, "b")) as b,
    ):
        a_ids = _submit(a, clip, 40)
        b_ids = _submit(b, clip, 4)
        queue = a.get("/v1/jobs", params={"limit": 1}).json()["queue"]
        assert queue["queued"] + queue["running"] > 0 and queue["weight"] == 1.0
        assert queue["running"] <= 8
        b_jobs = _drain(b, b_ids)
        a_jobs = _drain(a, a_ids)
    assert {j["status"] for j in a_jobs + b_jobs} == {"succeeded"}
    a_done = sorted(_finished(j) for j in a_jobs)
    assert max(_finished(j) for j in b_jobs) < a_done[19]


def _submit_together(clients: list[tuple[httpx.Client, int]], path: Path) -> list[list[str]]:
    """Submit `n` jobs per client from a few threads at once, interleaved across clients.

    Sequential submits on a busy CI runner take long enough for the first tenant's jobs to
    be leased before the other's arrive; concurrent ones also share the store's group commit.
    """
    order = [
        i
        for _, i in sorted(((j + 0.5) / n, i) for i, (_, n) in enumerate(clients) for j in range(n))
    ]
    with ThreadPoolExecutor(max_workers=6) as pool:
        ids = list(pool.map(lambda i: _submit(clients[i][0], path, 1)[0], order))
    return [[job for i, job in zip(order, ids, strict=True) if i == k] for k in range(len(clients))]


def test_weights_three_to_one_hold_while_both_tenants_wait(app, data_dir):
    clip = data_dir / "weather.wav"
    heavy_t, light_t = f"heavy-{uuid.uuid4().hex[:6]}", f"light-{uuid.uuid4().hex[:6]}"
    with (
        app.client(app.create_key(heavy_t, "heavy")) as heavy,
        app.client(app.create_key(light_t, "light")) as light,
    ):
        heavy_ids, light_ids = _submit_together([(heavy, 36), (light, 18)], clip)
        assert heavy.get("/v1/jobs", params={"limit": 1}).json()["queue"]["weight"] == 3.0
        heavy_jobs = _drain(heavy, heavy_ids)
        light_jobs = _drain(light, light_ids)
    assert {j["status"] for j in heavy_jobs + light_jobs} == {"succeeded"}
    # The window: both tenants backlogged, i.e. from when the last job was queued (and after
    # the 8th completion: the first slots were filled before the other tenant arrived) until
    # the first moment one of them had nothing left to start.
    jobs = heavy_jobs + light_jobs
    queued_all = max(datetime.fromisoformat(j["created_at"]) for j in jobs)
    starts = {
        name: max(datetime.fromisoformat(j["started_at"]) for j in tenant_jobs)
        for name, tenant_jobs in (("heavy", heavy_jobs), ("light", light_jobs))
    }
    done = sorted(
        [(_finished(j), "heavy") for j in heavy_jobs]
        + [(_finished(j), "light") for j in light_jobs]
    )
    begin, end = max(queued_all, done[7][0]), min(starts.values())
    window = [who for at, who in done if begin < at <= end]
    ratio = window.count("heavy") / max(1, window.count("light"))
    assert len(window) >= 16, (window, done, begin, end)
    assert abs(ratio - 3.0) / 3.0 <= 0.2, (ratio, window)


@pytest.mark.slow
def test_tracker_killed_during_a_flood_loses_nothing_and_the_share_holds(app, data_dir):
    import ray

    clip = data_dir / "weather.wav"
    tenant_a, tenant_b = f"kflood-{uuid.uuid4().hex[:6]}", f"klate-{uuid.uuid4().hex[:6]}"
    with (
        app.client(app.create_key(tenant_a, "a")) as a,
        app.client(app.create_key(tenant_b, "b")) as b,
    ):
        a_ids = _submit(a, clip, 30)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            jobs = a.get("/v1/jobs", params={"limit": 200}).json()["data"]
            if sum(j["status"] == "succeeded" for j in jobs) >= 2:
                break
            time.sleep(0.3)
        tracker = ray.get_actor(app.config.jobs.tracker_name, namespace=app.config.jobs.namespace)
        old = ray.get(tracker.ping.remote())
        ray.kill(tracker, no_restart=False)  # Ray restarts it; its leases expire
        b_ids = _submit(b, clip, 6)  # arrives while the flood's jobs wait for the new tracker
        b_jobs = _drain(b, b_ids)
        a_jobs = _drain(a, a_ids)
    assert ray.get(tracker.ping.remote()) != old
    assert {j["status"] for j in a_jobs + b_jobs} == {"succeeded"}
    assert len({j["id"] for j in a_jobs + b_jobs}) == 36
    a_done = sorted(_finished(j) for j in a_jobs)
    assert max(_finished(j) for j in b_jobs) < a_done[23]  # not behind the rest of the flood
    stats = ray.get(tracker.stats.remote())
    assert stats.duplicate_checkpoints == 0
