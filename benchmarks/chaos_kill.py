"""The chaos suite's kill scenarios (see `benchmarks/chaos.py`): they need Ray.

`transcriber`: the app's only Transcriber replica is `kill -9`ed under a small load (sync
transcriptions, a job submit per second, job lists and `/healthz`) while a handful of jobs
submitted just before are running; Serve starts a new replica. `tracker`: the same with the
job tracker actor, which Ray restarts (`max_restarts=-1`). Phases: before the kill, during
(the kill until the first 200 of a sync request sent after it: the restart; for the
tracker, until the new tracker answers a ping) and after. `tests/integration/
test_replica_restart.py` runs the same `run_kill` on the tests' Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.chaos import Load, wait_succeeded

KILL_PHASES = ("before", "during", "after")


def kill_config(root: Path, cache: Path, name: str, replica_wait_s: float) -> Any:
    """One tiny.en replica, jobs on the embedded stores (SQLite + a folder) under `root`."""
    from serve_app.config import AppConfig

    return AppConfig.model_validate(
        {
            "default_model": "tiny.en",
            "model_cache_dir": str(cache),
            "ingress": {"num_cpus": 0.1, "replica_wait_s": replica_wait_s},
            "storage": {
                "database_url": f"sqlite:///{root}/jobs.db",
                "blob_url": f"file://{root}/b",
            },
            "jobs": {
                "tracker_name": f"tracker-{name}",
                "tracker_num_cpus": 0.05,
                "max_concurrent_jobs": 2,
                "lease_seconds": 6,
                "poll_interval_s": 0.5,
                "retry_base_s": 0.5,
                "retry_max_s": 2,
            },
            "limits": {"decode_workers": 1},
            "speaker_embedder": {"enabled": False},
            "models": [
                {
                    "name": "tiny.en",
                    "num_cpus": 0.3,
                    "cpu_threads": 2,
                    "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.05},
                }
            ],
        }
    )


def actor_pid(actor: Any) -> int:
    """The OS pid of a Ray actor (a Serve replica is one)."""
    import ray

    pid: int = ray.get(actor.__ray_call__.remote(lambda _self: os.getpid()), timeout=30)
    return pid


def transcriber_actor(app_name: str) -> Any:
    """The app's one Transcriber replica actor."""
    import ray

    names = [
        a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if f"{app_name}#Transcriber" in a["name"]
    ]
    assert len(names) == 1, names
    return ray.get_actor(names[0]["name"], namespace=names[0]["namespace"])


def kill_transcriber(app_name: str) -> Callable[[], None]:
    """`kill -9` of the replica's worker process (what an OOM kill or a crash looks like)."""
    pid = actor_pid(transcriber_actor(app_name))
    return lambda: os.kill(pid, signal.SIGKILL)


def transcriber_back(app_name: str, deployment: str) -> Callable[[], bool]:
    """True once Serve runs a replica other than the one there now (its actor name differs)."""
    from ray import serve

    before = transcriber_actor(app_name)._ray_actor_id

    def check() -> bool:
        try:
            current = transcriber_actor(app_name)._ray_actor_id
            info = serve.status().applications[app_name].deployments[deployment]
        except (AssertionError, KeyError, ValueError):
            return False  # none, or the old and the new one both listed
        return bool(current != before and info.replica_states.get("RUNNING", 0) >= 1)

    return check


def kill_tracker(config: Any) -> Callable[[], None]:
    import ray

    tracker = ray.get_actor(config.jobs.tracker_name, namespace=config.jobs.namespace)
    pid = actor_pid(tracker)
    return lambda: os.kill(pid, signal.SIGKILL)


def _remove_tracker(config: Any) -> None:
    """The tracker is a detached actor: `serve.delete` leaves it running."""
    import ray

    with contextlib.suppress(ValueError):
        ray.kill(ray.get_actor(config.jobs.tracker_name, namespace=config.jobs.namespace))


def tracker_back(config: Any, old_worker: str) -> Callable[[], bool]:
    """True once a restarted tracker (a new worker id) answers."""
    import ray

    def check() -> bool:
        try:
            tracker = ray.get_actor(config.jobs.tracker_name, namespace=config.jobs.namespace)
            return bool(ray.get(tracker.ping.remote(), timeout=1) != old_worker)
        except Exception:  # dead, restarting or not yet named again
            return False

    return check


def tracker_worker(config: Any) -> str:
    import ray

    tracker = ray.get_actor(config.jobs.tracker_name, namespace=config.jobs.namespace)
    worker: str = ray.get(tracker.ping.remote(), timeout=30)
    return worker


@dataclass
class KillRun:
    load: Load
    killed_at: float
    back_at: float
    jobs_before: list[str] = field(default_factory=list)  # submitted just before the kill
    lost: int = 0
    duplicated: int = 0
    max_attempts: int = 0


async def run_kill(
    client: httpx.AsyncClient,
    audio: bytes,
    job_audio: bytes,
    kill: Callable[[], None],
    back: Callable[[], bool],
    *,
    phase_s: float = 2.0,
    jobs: int = 4,
    sync_workers: int = 2,
    timeout_s: float = 60.0,
    restart_timeout_s: float = 120.0,
) -> KillRun:
    """before → `jobs` submits, kill → during (until `back()`: the restart) → after; then
    every job is followed to the end and counted in the listing."""
    warm = await client.post("/v1/audio/transcriptions", files={"file": ("a.wav", audio)})
    assert warm.status_code == 200, warm.text
    load = Load(client, audio, timeout_s=timeout_s)
    tasks = [asyncio.create_task(load.sync_worker()) for _ in range(sync_workers)]
    tasks += [asyncio.create_task(w()) for w in (load.submit_worker, load.read_worker)]
    killed_at = back_at = time.monotonic()
    before: dict[str, str] = {}
    try:
        await asyncio.sleep(phase_s)
        for _ in range(jobs):
            key = uuid.uuid4().hex
            files = {"file": ("job.flac", job_audio)}
            reply = await client.post("/v1/jobs", files=files, headers={"idempotency-key": key})
            assert reply.status_code == 202, reply.text
            before[key] = reply.json()["id"]
        load.phase = "during"
        await asyncio.to_thread(kill)
        killed_at = time.monotonic()
        back_at = await _restarted(killed_at, back, restart_timeout_s)
        load.phase = "after"
        await asyncio.sleep(phase_s)
    finally:
        load.running = False
        await asyncio.gather(*tasks, return_exceptions=True)
    for key in load.refused:  # a 503'd submit is retried with its key, as a client would
        reply = await load.submit(key)
        assert reply.status_code in (200, 202), reply.text
        load.accepted[key] = reply.json()["id"]
    accepted = {**before, **load.accepted}
    ids = set(accepted.values())
    attempts = 0
    for job_id in ids:
        await wait_succeeded(client, job_id, timeout=180)
        attempts = max(attempts, (await client.get(f"/v1/jobs/{job_id}")).json()["attempts"])
    page = (await client.get("/v1/jobs", params={"limit": 200})).json()
    listed = [job["id"] for job in page["data"] if job["id"] in ids]
    duplicated = len(accepted) - len(ids) + len(listed) - len(set(listed))
    run = KillRun(load, killed_at, back_at, list(before.values()))
    run.lost, run.duplicated, run.max_attempts = len(ids - set(listed)), duplicated, attempts
    return run


async def _restarted(killed_at: float, back: Callable[[], bool], timeout_s: float) -> float:
    while time.monotonic() < killed_at + timeout_s:
        if await asyncio.to_thread(back):
            return time.monotonic()
        await asyncio.sleep(0.05)
    raise AssertionError(f"no restart within {timeout_s} s of the kill")


def on_replica_s(timing: str | None) -> float:
    """The replica's share of a sync answer: `queue` + `batch` in Server-Timing."""
    parts = (part.strip().partition(";dur=") for part in (timing or "").split(","))
    return sum(float(dur) / 1000 for name, _, dur in parts if name in ("queue", "batch"))


def summarize_kill(name: str, run: KillRun) -> dict[str, Any]:
    outcomes = run.load.outcomes
    by_phase = {
        phase: dict(Counter(str(o.status or "timeout") for o in outcomes if o.phase == phase))
        for phase in KILL_PHASES
    }
    refused = [o for o in outcomes if o.status == 503]
    # How long a sync request spent after the kill (from the kill, or from when it was sent).
    waits = {
        id(o): o.at - max(o.at - o.seconds, run.killed_at)
        for o in outcomes
        if o.kind == "sync" and o.at > run.killed_at
    }
    served = [
        o.at for o in outcomes if o.kind == "sync" and o.status == 200 and o.at > run.killed_at
    ]
    return {
        "scenario": name,
        "statuses": by_phase,
        "answers": len(outcomes),
        "worst_latency_s": round(max((o.seconds for o in outcomes), default=0.0), 3),
        "worst_503_s": round(max((o.seconds for o in refused), default=0.0), 3),
        "worst_sync_wait_from_kill_s": round(max(waits.values(), default=0.0), 3),
        # Less its replica's time (Server-Timing queue + batch): what waiting for one cost.
        "worst_sync_wait_from_kill_without_model_s": round(
            max(
                (w - on_replica_s(o.timing) for o in outcomes if (w := waits.get(id(o)))),
                default=0.0,
            ),
            3,
        ),
        "worst_503_from_kill_s": round(
            max((waits.get(id(o), 0.0) for o in refused), default=0.0), 3
        ),
        "codes_of_errors": sorted({o.code or str(o.status) for o in outcomes if o.status >= 400}),
        "503_without_retry_after": sum(1 for o in refused if not o.retry_after),
        "jobs_accepted": len(run.load.accepted) + len(run.jobs_before),
        "jobs_lost": run.lost,
        "jobs_duplicated": run.duplicated,
        "max_job_attempts": run.max_attempts,
        "recovery_s": round(run.back_at - run.killed_at, 3),
        "first_sync_200_after_kill_s": round(min(served, default=run.killed_at) - run.killed_at, 3),
    }


async def kill_scenarios(
    names: list[str], cache: Path, root: Path, phase_s: float = 5.0
) -> list[dict[str, Any]]:
    """Start Ray (2 CPUs) and Serve here, deploy one app per scenario, kill, tear down.
    `transcriber:2` is the Transcriber kill with `ingress.replica_wait_s` 2 (default 10)."""
    import ray
    from ray import serve

    from benchmarks.scale import deploy

    data = Path(__file__).resolve().parents[1] / "tests" / "data"
    audio, job_audio = (data / "hello.wav").read_bytes(), (data / "story.flac").read_bytes()
    results = []
    base = None
    try:
        for scenario in names:
            kind, _, wait = scenario.partition(":")
            wait_s = float(wait or 10.0)
            name = f"chaos-{kind}-{uuid.uuid4().hex[:6]}"
            config = kill_config(root / name, cache, name, replica_wait_s=wait_s)
            url, base, _ = await asyncio.to_thread(deploy, base, name, config)
            try:
                if kind == "transcriber":
                    kill = kill_transcriber(name)
                    back = transcriber_back(name, config.models[0].deployment_name)
                    title = f"Transcriber replica kill -9 (replica_wait_s {wait_s:g})"
                else:
                    kill = kill_tracker(config)
                    back = tracker_back(config, tracker_worker(config))
                    title = "job tracker kill -9"
                async with httpx.AsyncClient(base_url=url, timeout=120, trust_env=False) as client:
                    run = await run_kill(client, audio, job_audio, kill, back, phase_s=phase_s)
                results.append(summarize_kill(title, run))
            finally:
                serve.delete(name)
                _remove_tracker(config)
    finally:
        if base is not None:
            serve.shutdown()
            ray.shutdown()
    return results
