"""Group commit of job submissions: batching, per-item errors, and FileBlobStore.put_many."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from serve_app.jobs.groupcommit import GroupCommit
from serve_app.stores import FileBlobStore


def test_concurrent_submits_share_batches_and_get_their_own_results() -> None:
    batches: list[list[int]] = []
    gate = threading.Event()

    def persist(items: Sequence[int]) -> list[int | Exception]:
        if not batches:
            gate.wait(5)  # hold the first batch so that the rest queue behind it
        batches.append(list(items))
        return [ValueError(f"bad {i}") if i == 3 else i * 10 for i in items]

    async def main() -> list[int | BaseException]:
        commit: GroupCommit[int, int] = GroupCommit(persist, writers=1)
        first = asyncio.ensure_future(commit.submit(0))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(commit.submit(i)) for i in range(1, 6)]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    results = asyncio.run(main())
    assert batches == [[0], [1, 2, 3, 4, 5]]
    assert results[:3] == [0, 10, 20] and results[4:] == [40, 50]
    assert isinstance(results[3], ValueError)


def test_a_failing_batch_fails_each_caller_and_the_next_batch_still_runs() -> None:
    calls: list[Sequence[str]] = []

    def persist(items: Sequence[str]) -> list[str | Exception]:
        calls.append(items)
        if "boom" in items:
            raise OSError("disk gone")
        return list(items)

    async def main() -> tuple[BaseException | str, str]:
        commit: GroupCommit[str, str] = GroupCommit(persist)
        failed = await asyncio.gather(commit.submit("boom"), return_exceptions=True)
        return failed[0], await commit.submit("ok")

    failed, ok = asyncio.run(main())
    assert isinstance(failed, OSError) and ok == "ok"


def test_put_many_writes_every_object_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    items = [(f"audio/{i:02x}/obj{i}", bytes([i]) * 1000) for i in range(12)]
    items.append(("audio/00/obj0", b"again"))  # same key twice: the later one wins
    store.put_many(items)
    assert store.get("audio/05/obj5") == bytes([5]) * 1000
    assert store.get("audio/00/obj0") == b"again"
    assert not [p for p in (tmp_path / "blobs").rglob("*") if p.name.endswith(".tmp")]
    store.put_many([])
    with pytest.raises(Exception, match="invalid blob key"):
        store.put_many([("ok/key", b"1"), ("../escape", b"2")])


def test_a_submit_made_as_the_last_writer_finishes_is_not_stranded() -> None:
    """The caller whose result ends a batch runs before the finished writer's done-callback;
    a submit it makes right then must start a writer, not wait for one that has exited
    (at the end of a burst nothing else would come to drain it: it hung until the next)."""

    async def inline(fn: object, items: Sequence[int]) -> list[int]:
        return list(items)  # no suspension: the writer ends in the step that set the result

    async def submits() -> list[int]:
        commit: GroupCommit[int, int] = GroupCommit(list, writers=1, run=inline)
        return [await commit.submit(i) for i in range(3)]  # each awaited in this one task

    async def main() -> list[int]:
        return await asyncio.wait_for(submits(), 2)

    assert asyncio.run(main()) == [0, 1, 2]


def test_several_writers_run_batches_at_once() -> None:
    running, most = 0, 0
    lock = threading.Lock()
    release = threading.Event()

    def persist(items: Sequence[int]) -> list[int | Exception]:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        release.wait(5)
        with lock:
            running -= 1
        return list(items)

    async def main() -> list[int]:
        commit: GroupCommit[int, int] = GroupCommit(persist, writers=3)
        tasks = []
        for i in range(10):  # arriving one by one while the writers are busy
            tasks.append(asyncio.ensure_future(commit.submit(i)))
            await asyncio.sleep(0.02)
        release.set()
        return await asyncio.gather(*tasks)

    assert asyncio.run(main()) == list(range(10))
    assert most == 3
