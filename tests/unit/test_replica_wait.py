"""`ReplicaWait`: a call waits a bounded time to be assigned to a replica, never for its decode.

The fake response stands in for Ray Serve's `DeploymentResponse`: `_to_object_ref` resolves
when the router assigns the call, and the ref it returns resolves with the replica's answer.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from ray.exceptions import RayActorError

from serve_app.config import AppConfig
from serve_app.errors import BackendUnavailable
from serve_app.pipeline.clients import RayModelClient, ReplicaWait

WAIT_S = 0.2


class FakeResponse:
    by_reference = True

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.assignment: asyncio.Future[None] = loop.create_future()
        self.answer: asyncio.Future[Any] = loop.create_future()
        self.cancelled = False
        self.assignment_cancelled = False

    async def _to_object_ref(self) -> asyncio.Future[Any]:
        try:
            await self.assignment
        except asyncio.CancelledError:
            self.assignment_cancelled = True
            raise
        return self.answer

    def cancel(self) -> None:
        self.cancelled = True

    def assign(self) -> None:
        self.assignment.set_result(None)


def later(delay: float, action: Any) -> None:
    asyncio.get_running_loop().call_later(delay, action)


async def test_no_replica_is_503_within_the_wait_and_leaves_nothing_queued() -> None:
    wait = ReplicaWait(WAIT_S, "model")
    response = FakeResponse()
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as raised:
        await wait.call(response)  # type: ignore[arg-type]
    took = time.monotonic() - started
    assert WAIT_S <= took < WAIT_S + 0.15
    assert raised.value.status == 503 and raised.value.headers["Retry-After"] == "1"
    await asyncio.sleep(0)
    assert response.cancelled and response.assignment_cancelled


async def test_a_long_decode_after_assignment_is_not_cut_off() -> None:
    wait = ReplicaWait(WAIT_S, "model")
    response = FakeResponse()
    response.assign()
    later(4 * WAIT_S, lambda: response.answer.set_result("text"))
    assert await wait.call(response) == "text"  # type: ignore[arg-type]


async def test_a_call_queued_behind_busy_replicas_keeps_waiting() -> None:
    wait = ReplicaWait(WAIT_S, "model")
    running, queued = FakeResponse(), FakeResponse()
    running.assign()
    first = asyncio.ensure_future(wait.call(running))  # type: ignore[arg-type]
    # The replica is full: the second call is assigned only when the first is answered.
    later(3 * WAIT_S, lambda: running.answer.set_result("one"))
    later(3 * WAIT_S, queued.assign)
    later(3.5 * WAIT_S, lambda: queued.answer.set_result("two"))
    assert await wait.call(queued) == "two"  # type: ignore[arg-type]
    assert await first == "one"


async def test_answers_within_the_wait_count_as_progress() -> None:
    wait = ReplicaWait(WAIT_S, "model")
    other, queued = FakeResponse(), FakeResponse()
    other.assign()
    answered = asyncio.ensure_future(wait.call(other))  # type: ignore[arg-type]
    later(0.5 * WAIT_S, lambda: other.answer.set_result("x"))  # progress during the wait
    later(1.5 * WAIT_S, queued.assign)  # past one wait, but an answer came within it
    queued.answer.set_result("y")
    assert await wait.call(queued) == "y"  # type: ignore[arg-type]
    assert await answered == "x"


async def test_caller_cancelled_while_waiting_cancels_the_assignment() -> None:
    wait = ReplicaWait(WAIT_S, "model")
    response = FakeResponse()
    task = asyncio.ensure_future(wait.call(response))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert response.cancelled and response.assignment_cancelled


async def test_without_a_bound_the_call_waits() -> None:
    class Plain:
        by_reference = True

        def __await__(self) -> Any:
            yield from asyncio.sleep(2 * WAIT_S).__await__()
            return "late"

    assert await ReplicaWait(None, "model").call(Plain()) == "late"  # type: ignore[arg-type]
    Plain.by_reference = False  # a gRPC handle: no ObjectRef to wait for, so no bound
    assert await ReplicaWait(WAIT_S, "model").call(Plain()) == "late"  # type: ignore[arg-type]


class FakeHandle:
    """`handle.transcribe_chunk.remote(chunk)`: the first call's replica dies."""

    def __init__(self) -> None:
        self.calls = 0
        self.transcribe_chunk = self

    def remote(self, chunk: Any) -> FakeResponse:
        self.calls += 1
        response = FakeResponse()
        response.assign()
        if self.calls == 1:
            response.answer.set_exception(RayActorError())
        else:
            response.answer.set_result(f"chunk {chunk.index}")
        return response


async def test_a_dead_replica_is_still_retried() -> None:
    handle = FakeHandle()
    client = RayModelClient(handle, WAIT_S)  # type: ignore[arg-type]

    class Chunk:
        index = 3

    assert await client.transcribe_chunk(Chunk()) == "chunk 3"  # type: ignore[arg-type]
    assert handle.calls == 2


def test_replica_wait_is_configured_on_the_ingress() -> None:
    assert AppConfig().ingress.replica_wait_s == 10.0
    config = AppConfig.model_validate({"ingress": {"replica_wait_s": 2.5}})
    assert config.ingress.replica_wait_s == 2.5
    with pytest.raises(ValueError):
        AppConfig.model_validate({"ingress": {"replica_wait_s": 0}})
