"""Retention in the running service (in-process stack): the tracker's sweeper on its own
schedule, expired results answered with 404, and every deletion counted."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import pytest_asyncio

from serve_app.config import AppConfig
from serve_app.inference.replica import ModelReplica
from serve_app.jobs.retention import EXPIRED, PURGE
from serve_app.stores.records import utcnow
from serve_app.testing import LocalStack
from tests.unit.conftest import LOOP, assert_error, stack_config, wait_job

pytestmark = LOOP


class Counted:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    def deleted(self, kind: str, reason: str, count: int) -> None:
        self.calls.append((kind, reason, count))


@pytest_asyncio.fixture(loop_scope="session")
async def sweeping(tmp_path: Path, replica: ModelReplica) -> AsyncIterator[LocalStack]:
    base = stack_config(tmp_path)
    config = AppConfig.model_validate(
        {
            **base.model_dump(),
            "retention": {"sweep_interval_s": 0.2, "audio_hours": 0, "result_days": None},
        }
    )
    async with LocalStack(config, replicas={"tiny.en": replica}) as entered:
        yield entered


async def _until(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_tracker_sweeps_audio_after_the_job_ends(sweeping: LocalStack, data_dir) -> None:
    assert sweeping.tracker is not None and sweeping.jobs is not None
    counted = Counted()
    sweeping.tracker.retention.observer = counted
    async with sweeping.http() as client:
        files = {"file": ("hello.wav", (data_dir / "hello.wav").read_bytes())}
        job = (await client.post("/v1/jobs", files=files)).json()
        done = await wait_job(client, job["id"])
        assert done["status"] == "succeeded"
        blobs, store = sweeping.jobs.blobs, sweeping.jobs.store
        sha = hashlib.sha256(files["file"][1]).hexdigest()
        audio_key = f"audio/{sha[:2]}/{sha}"  # the content key (the row may be swept already)
        await _until(lambda: store.get_job(job["id"]).audio_key is None)
        assert not blobs.exists(audio_key)
        # The result is kept (result_days: null), and still served.
        assert (await client.get(f"/v1/jobs/{job['id']}/result")).status_code == 200
        assert ("audio", EXPIRED, 1) in counted.calls


async def test_expired_result_is_404_and_purges_are_counted(stack: LocalStack, data_dir) -> None:
    assert stack.tracker is not None and stack.jobs is not None
    counted = Counted()
    stack.jobs.retention.observer = counted
    async with stack.http() as client:
        files = {"file": ("hello.wav", (data_dir / "hello.wav").read_bytes())}
        job = (await client.post("/v1/jobs", files=files)).json()
        assert (await wait_job(client, job["id"]))["status"] == "succeeded"
        # Sweep as if 31 days had passed: the default keeps results 30 days, rows 90.
        later = utcnow() + timedelta(days=31)
        done = await asyncio.to_thread(stack.tracker.retention.sweep, later)
        assert dict(done.counts) == {"audio": 1, "result": 1}
        status = (await client.get(f"/v1/jobs/{job['id']}")).json()
        assert status["status"] == "succeeded" and status["result_available"] is False
        assert_error(await client.get(f"/v1/jobs/{job['id']}/result"), 404, "not_found")
        response = await client.delete(f"/v1/jobs/{job['id']}")
        assert response.status_code == 204
        assert counted.calls == [("job", PURGE, 1)]
