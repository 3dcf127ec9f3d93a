"""Failure drills on Postgres + SeaweedFS + Redis: no accepted job is ever lost."""

from __future__ import annotations

import io
import time
import uuid
import wave

import numpy as np
import pytest

from serve_app.pipeline.decode import decode_audio
from serve_app.stores import open_job_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _submit_many(app, path, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        response = app.submit(path, headers={"Idempotency-Key": uuid.uuid4().hex})
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


def _checkpoints(app, job_ids: list[str]) -> dict[str, list]:
    with open_job_store(app.storage["database_url"]) as store:
        return {job_id: store.load_checkpoints(job_id) for job_id in job_ids}


def _wait_progress(app, job_ids: list[str], at_least: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = sum(len(c) for c in _checkpoints(app, job_ids).values())
        if done >= at_least:
            return
        time.sleep(0.3)
    raise AssertionError("jobs made no progress")


def test_tracker_killed_midway_loses_nothing_and_recomputes_nothing(real_jobs_app, data_dir):
    import ray

    app = real_jobs_app
    ids = _submit_many(app, data_dir / "story.flac", 20)  # 2 chunks each
    _wait_progress(app, ids, at_least=6)
    old_worker = ray.get(app.tracker().ping.remote())
    ray.kill(app.tracker(), no_restart=False)  # Ray restarts it (max_restarts=-1)
    before = sum(len(c) for c in _checkpoints(app, ids).values())

    jobs = [app.wait(job_id, timeout=300) for job_id in ids]
    errors = [(j["attempts"], j["error"]) for j in jobs if j["status"] != "succeeded"]
    assert not errors, errors
    stats = ray.get(app.tracker().stats.remote())
    assert stats.worker_id != old_worker
    total = sum(j["total_chunks"] for j in jobs)
    assert total == 40
    # After the restart only chunks without a checkpoint were computed, none twice.
    assert stats.duplicate_checkpoints == 0
    assert stats.chunks_computed <= total - before
    checkpoints = _checkpoints(app, ids)
    assert all(len(c) == 2 for c in checkpoints.values())
    by_old = sum(1 for cs in checkpoints.values() for c in cs if c.computed_by == old_worker)
    assert by_old >= before


def test_transcriber_replica_killed_during_jobs(real_jobs_app, data_dir):
    import ray

    app = real_jobs_app
    ids = _submit_many(app, data_dir / "story.flac", 6)
    _wait_progress(app, ids, at_least=1)
    replicas = [
        a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if app.name in a["name"] and "Transcriber" in a["name"]
    ]
    assert replicas, ray.util.list_named_actors(all_namespaces=True)
    for replica in replicas:
        ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=True)
    jobs = [app.wait(job_id, timeout=300) for job_id in ids]
    assert [j["status"] for j in jobs] == ["succeeded"] * 6


def _long_wav(data_dir, repeats: int) -> bytes:
    samples = decode_audio((data_dir / "story.flac").read_bytes(), max_duration_s=600).samples
    audio = np.concatenate([samples] * repeats)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes((audio * 32767).astype(np.int16).tobytes())
    return buffer.getvalue()


def test_cancel_running_long_job_stops_within_a_batch(real_jobs_app, data_dir):
    app = real_jobs_app
    audio = _long_wav(data_dir, repeats=8)  # ~6 minutes, many chunks
    response = app.client.post("/v1/jobs", files={"file": ("long.wav", audio)})
    job_id = response.json()["id"]
    _wait_progress(app, [job_id], at_least=1, timeout=240)
    cancelled = app.client.delete(f"/v1/jobs/{job_id}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    at_cancel = len(_checkpoints(app, [job_id])[job_id])
    time.sleep(4)
    job = app.client.get(f"/v1/jobs/{job_id}").json()
    after = len(_checkpoints(app, [job_id])[job_id])
    assert job["status"] == "cancelled"
    assert job["total_chunks"] and after < job["total_chunks"]
    batch = app.config.models[0].batching.max_batch_size
    assert after - at_cancel <= batch  # at most the batch already in flight lands
    assert app.client.get(f"/v1/jobs/{job_id}/result").status_code == 409
    assert app.client.delete(f"/v1/jobs/{job_id}").status_code == 204  # ended: purged
    assert app.client.get(f"/v1/jobs/{job_id}").status_code == 404


def test_tracker_killed_for_good_is_created_again(real_jobs_app, data_dir):
    # Ray will not restart an actor killed with no_restart=True; the ingress's health check
    # sees it dead and creates a new one, which leases the jobs waiting in the store.
    import ray

    app = real_jobs_app
    old_worker = ray.get(app.tracker().ping.remote())
    ray.kill(app.tracker(), no_restart=True)
    ids = _submit_many(app, data_dir / "hello.wav", 3)  # accepted while no tracker runs
    jobs = [app.wait(job_id, timeout=120) for job_id in ids]
    assert [j["status"] for j in jobs] == ["succeeded"] * 3, jobs
    assert ray.get(app.tracker().ping.remote()) != old_worker
