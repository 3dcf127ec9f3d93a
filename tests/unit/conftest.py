"""The whole service in-process (`serve_app.testing.LocalStack`): one tiny.en replica, no Ray.

The replica is loaded once per session and shared by every stack; each test gets its own
stack on fresh SQLite + folder stores. The replica's batcher starts its worker task in the
event loop that first uses it, so the stack fixtures and the tests that use them all run
in the session loop (`pytestmark = LOOP` in those modules).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from serve_app.config import AppConfig, ModelConfig
from serve_app.inference.replica import ModelReplica
from serve_app.testing import LocalStack, load_replica
from tests.text import SseReader
from tests.unit.live_support import serving

# Modules whose tests use the stack put `pytestmark = LOOP` at the top.
LOOP = pytest.mark.asyncio(loop_scope="session")
TINY = ModelConfig(name="tiny.en", aliases=["whisper-1"])


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    """The response is `status` with exactly the `{"error": {"code", "message"}}` body."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body


def stack_config(root: Path, **jobs: Any) -> AppConfig:
    return AppConfig(
        models=[TINY],
        storage={"database_url": f"sqlite:///{root}/jobs.db", "blob_url": f"file://{root}/blobs"},
        jobs={"poll_interval_s": 0.2, "max_concurrent_jobs": 2, **jobs},
        limits={"decode_workers": 1},
    )


async def wait_job(client: httpx.AsyncClient, job_id: str, timeout: float = 60) -> dict[str, Any]:
    """Poll GET /v1/jobs/{id} until the job is terminal (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")
        await asyncio.sleep(0.1)


async def sse_events(
    client: httpx.AsyncClient, path: str, timeout: float = 60
) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of an SSE stream up to and including `done`."""
    reader = SseReader()
    async with client.stream("GET", path, timeout=timeout) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if reader.feed(line):
                break
    return reader.events


def _ray_running() -> bool:
    # The HTTP app imports ray (GET /metrics); importing is fine, starting it is not.
    return "ray" in sys.modules and bool(sys.modules["ray"].is_initialized())


@pytest.fixture(autouse=True)
def _no_ray() -> Iterator[None]:
    """These tests run the service without Ray: no unit test may start a Ray instance.

    Checked per test, because `make test` runs the integration tests (which share one
    Ray instance) in the same session.
    """
    before = _ray_running()
    yield
    assert before or not _ray_running(), "a unit test initialised Ray"


@pytest.fixture(scope="session")
def replica(model_cache: Path) -> Iterator[ModelReplica]:
    """The one tiny.en replica of the session (loading weights is the slow part)."""
    loaded = load_replica(TINY, model_cache)
    yield loaded
    loaded.close()


@pytest_asyncio.fixture(loop_scope="session")
async def stack(tmp_path: Path, replica: ModelReplica) -> AsyncIterator[LocalStack]:
    """An entered LocalStack on fresh stores, with the shared replica."""
    async with LocalStack(stack_config(tmp_path), replicas={"tiny.en": replica}) as entered:
        yield entered


@pytest_asyncio.fixture(loop_scope="session")
async def client(stack: LocalStack) -> AsyncIterator[httpx.AsyncClient]:
    async with stack.http() as http:
        yield http


@pytest_asyncio.fixture(loop_scope="session")
async def idle_stack(stack: LocalStack) -> LocalStack:
    """The same stack with its tracker stopped: submitted jobs stay queued until restarted."""
    assert stack.tracker is not None
    await stack.tracker.stop()
    return stack


# ---- the realtime tests' fixtures (test_realtime*.py) ----------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def url(stack: LocalStack) -> AsyncIterator[str]:
    """The stack's app on a real socket (uvicorn in the session loop): its ws:// base URL."""
    async with serving(stack.app) as served:
        yield served


@pytest_asyncio.fixture(loop_scope="session")
async def make_stack(tmp_path: Path, replica: ModelReplica) -> AsyncIterator[Callable[..., Any]]:
    """Stacks with other settings (auth, realtime limits), on the shared replica."""
    opened: list[LocalStack] = []

    async def make(**sections: Any) -> LocalStack:
        base = stack_config(tmp_path / str(len(opened))).model_dump()
        config = AppConfig.model_validate({**base, **sections})
        entered = await LocalStack(config, replicas={"tiny.en": replica}).__aenter__()
        opened.append(entered)
        return entered

    yield make
    for entered in opened:
        await entered.__aexit__(None, None, None)
