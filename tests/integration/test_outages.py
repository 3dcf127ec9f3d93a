"""Backend outages under a small bounded load (issue 16): Postgres, Redis and S3 are stopped
and started again while sync transcriptions, job submits, job lists and probes keep coming.

During the outage every request is answered within 2 s: the normal answer where the backend
is not needed, else 503 `backend_unavailable` with `Retry-After`; from 2 s after the backend
is back everything is normal again (no leftover 429s); no job is lost or duplicated (503'd
submits are retried afterwards with their `Idempotency-Key`, as a client would).

The stack is `LocalStack` (the same HTTP app, front end and tracker as the Ingress, no Ray)
over the session's real servers; each test restarts the server it stopped, also on failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve_app.config import AppConfig
from serve_app.inference.replica import ModelReplica
from serve_app.security.keys import create_key
from serve_app.testing import LocalStack, load_replica
from tests.fixtures.processes import Restartable
from tests.unit.conftest import LOOP, TINY

pytestmark = [LOOP, pytest.mark.integration]

ANSWER_S = 2.0  # the bound on every answer during and after an outage
OUTAGE_S = 5.0
PHASE_S = 3.0


@pytest.fixture(scope="module")
def tiny(model_cache: Path) -> Iterator[ModelReplica]:
    loaded = load_replica(TINY, model_cache)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def outage_db(postgres_server: Any, postgres_template: str) -> Iterator[str]:
    name = postgres_server.create_database(template=postgres_template)
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)


def _config(db_url: str, redis_url: str, s3: Any, bucket_url: str) -> AppConfig:
    return AppConfig(
        models=[TINY],
        storage={
            "database_url": db_url,
            "blob_url": bucket_url,
            "redis_url": redis_url,
            "s3": dataclasses.asdict(s3),
        },
        jobs={
            "poll_interval_s": 0.2,
            "max_concurrent_jobs": 2,
            "retry_base_s": 0.5,
            "retry_max_s": 2,
            "max_attempts": 20,
        },
        limits={"decode_workers": 1},
        # A short key cache: the outage outlasts it, so keys must come from the stale cache.
        auth={"enabled": True, "key_cache_s": 1.0},
        # max_concurrent = the load's concurrency: one slot left behind would show as a 429.
        rate_limit={
            "enabled": True,
            "default": {"requests_per_s": 50, "burst": 50, "max_concurrent": 3},
        },
    )


@dataclass
class Outcome:
    kind: str
    phase: str
    status: int  # 0: no answer within the client's timeout
    seconds: float
    code: str | None = None
    retry_after: str | None = None
    ended: str = ""  # the phase when the answer came
    timing: str | None = None  # Server-Timing of a sync answer: where a slow one spent it

    @property
    def normal_phase(self) -> bool:
        """Sent and answered while the backend was up (before the stop, or 2 s after it is back)."""
        return (self.phase, self.ended) in (("before", "before"), ("after", "after"))


@dataclass
class Load:
    """Bounded load: each worker sends one request at a time, tagged with the current phase."""

    client: httpx.AsyncClient
    audio: bytes
    phase: str = "before"
    outcomes: list[Outcome] = field(default_factory=list)
    accepted: dict[str, str] = field(default_factory=dict)  # idempotency key -> job id
    refused: list[str] = field(default_factory=list)  # idempotency keys answered 503
    running: bool = True

    async def _one(self, kind: str, send: Callable[[], Any]) -> httpx.Response | None:
        phase, started = self.phase, time.monotonic()
        try:
            response = await asyncio.wait_for(send(), timeout=10)
        except TimeoutError:
            self.outcomes.append(Outcome(kind, phase, 0, time.monotonic() - started, ended=phase))
            return None
        code = None
        if response.status_code >= 400:
            code = response.json().get("error", {}).get("code")
        self.outcomes.append(
            Outcome(
                kind,
                phase,
                response.status_code,
                time.monotonic() - started,
                code,
                response.headers.get("retry-after"),
                self.phase,
                response.headers.get("server-timing"),
            )
        )
        return response

    async def sync_worker(self) -> None:
        while self.running:
            files = {"file": ("hello.wav", self.audio)}
            post = functools.partial(self.client.post, "/v1/audio/transcriptions", files=files)
            await self._one("sync", post)

    async def submit_worker(self) -> None:
        while self.running:
            key = uuid.uuid4().hex
            response = await self._one("submit", functools.partial(self._submit, key))
            if response is not None and response.status_code in (200, 202):
                self.accepted[key] = response.json()["id"]
            elif response is not None and response.status_code == 503:
                self.refused.append(key)
            await asyncio.sleep(1.0)  # a job is ~0.5 s of model time: keep below saturation

    def _submit(self, key: str) -> Any:
        files = {"file": ("hello.wav", self.audio)}
        return self.client.post("/v1/jobs", files=files, headers={"idempotency-key": key})

    async def read_worker(self) -> None:
        while self.running:
            await self._one("list", lambda: self.client.get("/v1/jobs"))
            await self._one("healthz", lambda: self.client.get("/healthz"))
            await asyncio.sleep(0.2)

    async def retry_refused(self) -> None:
        for key in self.refused:
            response = await self._submit(key)
            assert response.status_code in (200, 202), response.text
            self.accepted[key] = response.json()["id"]


@asynccontextmanager
async def _stack(config: AppConfig, tiny: ModelReplica) -> AsyncIterator[tuple[LocalStack, str]]:
    async with LocalStack(config, replicas={"tiny.en": tiny}) as stack:
        assert stack.jobs is not None
        key, _ = create_key(stack.jobs.store, f"t-{uuid.uuid4().hex[:8]}", "outage")
        yield stack, key


async def _run_outage(
    stack: LocalStack, key: str, audio: bytes, control: Restartable
) -> tuple[Load, float]:
    """before → stop → during → start → after; the restart is in a finally."""
    async with stack.http({"authorization": f"Bearer {key}"}) as client:
        warm = await client.post("/v1/audio/transcriptions", files={"file": ("a.wav", audio)})
        assert warm.status_code == 200, warm.text  # decoder child and VAD loaded before timing
        load = Load(client, audio)
        workers = [
            asyncio.create_task(w())
            for w in (load.sync_worker, load.submit_worker, load.read_worker)
        ]
        stopped = False
        try:
            await asyncio.sleep(PHASE_S)
            load.phase = "during"
            stopped = True
            await asyncio.to_thread(control.stop)
            await asyncio.sleep(OUTAGE_S)
            await asyncio.to_thread(control.start)
            stopped = False
            returned = time.monotonic()
            load.phase = "recovering"
            await asyncio.sleep(ANSWER_S)
            load.phase = "after"
            await asyncio.sleep(PHASE_S)
        finally:
            load.running = False
            if stopped:
                await asyncio.to_thread(control.start)
            await asyncio.gather(*workers, return_exceptions=True)
        await load.retry_refused()
        assert stack.jobs is not None
        ids = set(load.accepted.values())
        assert len(ids) == len(load.accepted), "two idempotency keys share a job"
        for job_id in ids:
            await _wait_succeeded(client, job_id)
        tenant = (await client.get("/v1/jobs", params={"limit": 200})).json()
        listed = {job["id"] for job in tenant["data"]}
        assert listed == ids, f"lost {ids - listed}, extra {listed - ids}"
        return load, returned


async def _wait_succeeded(client: httpx.AsyncClient, job_id: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job.get("status") == "succeeded":
            return
        assert job.get("status") not in ("failed", "cancelled"), job
        await asyncio.sleep(0.3)
    raise AssertionError(f"job {job_id} not done after {timeout}s")


def _model_s(timing: str | None) -> float:
    """The model's share of a sync answer (`chunks` in Server-Timing: batcher queue + batch)."""
    for part in (timing or "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        if name == "chunks":
            return float(dur) / 1000
    return 0.0


def _check(load: Load, needs_backend: set[str]) -> None:
    """Every answer in time; 503s only during the outage, only where the backend is needed.

    A sync answer's bound leaves out the model's own time: on the shared 2-core CI machine the
    in-process model, busy with the jobs too, is what varies; the outage must add nothing."""
    slow = [o for o in load.outcomes if o.status == 0 or o.seconds - _model_s(o.timing) > ANSWER_S]
    assert not slow, f"answers slower than {ANSWER_S} s: {slow[:5]}"
    for outcome in load.outcomes:
        if outcome.normal_phase or outcome.kind not in needs_backend:
            assert outcome.status < 400, outcome
        elif outcome.status >= 400:
            assert outcome.status == 503, outcome
            assert outcome.code == "backend_unavailable", outcome
            assert outcome.retry_after, outcome
    after = [o for o in load.outcomes if o.phase == "after"]
    assert after and all(o.status < 400 for o in after)
    worst = max(o.seconds for o in load.outcomes)
    print(f"{len(load.outcomes)} answers, worst {worst:.2f} s")  # shown with -s


@pytest.fixture
def bucket_url(s3_bucket: str) -> str:
    return f"s3://{s3_bucket}/outage-{uuid.uuid4().hex[:8]}"


async def test_postgres_outage_fails_fast_and_recovers(
    tiny: ModelReplica,
    outage_db: str,
    postgres_server: Any,
    redis_server_url: str,
    s3_settings: Any,
    bucket_url: str,
    data_dir: Path,
) -> None:
    config = _config(outage_db, redis_server_url, s3_settings, bucket_url)
    async with _stack(config, tiny) as (stack, key):
        load, _ = await _run_outage(
            stack, key, (data_dir / "hello.wav").read_bytes(), postgres_server.control
        )
    _check(load, needs_backend={"submit", "list"})
    during = [o for o in load.outcomes if o.phase == "during" and o.kind == "submit"]
    assert any(o.status == 503 for o in during), "no submit was refused while Postgres was down"


async def test_redis_outage_keeps_serving(
    tiny: ModelReplica,
    outage_db: str,
    redis_control: Restartable,
    redis_server_url: str,
    s3_settings: Any,
    bucket_url: str,
    data_dir: Path,
) -> None:
    config = _config(outage_db, redis_server_url, s3_settings, bucket_url)
    async with _stack(config, tiny) as (stack, key):
        load, _ = await _run_outage(
            stack, key, (data_dir / "hello.wav").read_bytes(), redis_control
        )
    _check(load, needs_backend=set())


async def test_s3_outage_refuses_submits_at_once(
    tiny: ModelReplica,
    outage_db: str,
    redis_server_url: str,
    s3_server: Any,
    bucket_url: str,
    data_dir: Path,
) -> None:
    config = _config(outage_db, redis_server_url, s3_server.settings, bucket_url)
    async with _stack(config, tiny) as (stack, key):
        load, _ = await _run_outage(
            stack, key, (data_dir / "hello.wav").read_bytes(), s3_server.control
        )
    _check(load, needs_backend={"submit"})
