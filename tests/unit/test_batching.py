from __future__ import annotations

import asyncio

import pytest

from serve_app.config import BatchSettings
from serve_app.inference.batcher import BatchRecord, KeyedBatcher


class Recorder:
    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[str]] = []
        self.records: list[BatchRecord] = []
        self.delay = delay

    async def run(self, items):
        self.batches.append(list(items))
        await asyncio.sleep(self.delay)
        return [f"done:{item}" for item in items]


async def test_concurrent_items_with_one_key_share_a_batch():
    rec = Recorder()
    batcher = KeyedBatcher(
        rec.run,
        BatchSettings(max_batch_size=4, batch_wait_timeout_s=0.05),
        on_batch=rec.records.append,
    )
    results = await asyncio.gather(*(batcher.submit("k", f"i{n}") for n in range(6)))
    assert results == [f"done:i{n}" for n in range(6)]
    assert [len(b) for b in rec.batches] == [4, 2]
    assert batcher.size_histogram == {4: 1, 2: 1}
    assert [r.size for r in rec.records] == [4, 2]


async def test_different_keys_never_mix():
    rec = Recorder()
    batcher = KeyedBatcher(rec.run, BatchSettings(max_batch_size=8, batch_wait_timeout_s=0.02))
    await asyncio.gather(
        *(
            batcher.submit("en" if n % 2 else "de", f"{'en' if n % 2 else 'de'}{n}")
            for n in range(8)
        )
    )
    for batch in rec.batches:
        assert len({item[:2] for item in batch}) == 1


async def test_higher_priority_goes_first():
    rec = Recorder(delay=0.05)
    batcher = KeyedBatcher(rec.run, BatchSettings(max_batch_size=1, batch_wait_timeout_s=0))
    first = asyncio.ensure_future(batcher.submit("k", "blocker"))
    await asyncio.sleep(0.01)  # blocker is running; queue the rest behind it
    low = [asyncio.ensure_future(batcher.submit("k", f"low{n}", priority=0)) for n in range(3)]
    await asyncio.sleep(0)
    high = asyncio.ensure_future(batcher.submit("k", "high", priority=10))
    await asyncio.gather(first, high, *low)
    assert [b[0] for b in rec.batches][:2] == ["blocker", "high"]


async def test_items_arriving_during_a_batch_fill_the_next():
    rec = Recorder(delay=0.1)
    batcher = KeyedBatcher(rec.run, BatchSettings(max_batch_size=8, batch_wait_timeout_s=0))
    first = asyncio.ensure_future(batcher.submit("k", "a"))
    await asyncio.sleep(0.02)
    rest = [asyncio.ensure_future(batcher.submit("k", f"b{n}")) for n in range(5)]
    await asyncio.gather(first, *rest)
    assert [len(b) for b in rec.batches] == [1, 5]


async def test_cancelled_items_are_skipped():
    rec = Recorder(delay=0.05)
    batcher = KeyedBatcher(rec.run, BatchSettings(max_batch_size=1, batch_wait_timeout_s=0))
    first = asyncio.ensure_future(batcher.submit("k", "a"))
    await asyncio.sleep(0.01)
    doomed = asyncio.ensure_future(batcher.submit("k", "doomed"))
    kept = asyncio.ensure_future(batcher.submit("k", "kept"))
    await asyncio.sleep(0)
    doomed.cancel()
    await asyncio.gather(first, kept)
    assert ["doomed"] not in rec.batches


async def test_errors_reach_every_caller_and_the_batcher_survives():
    calls = 0

    async def flaky(items):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return list(items)

    batcher = KeyedBatcher(flaky, BatchSettings(max_batch_size=4, batch_wait_timeout_s=0.02))
    results = await asyncio.gather(
        *(batcher.submit("k", n) for n in range(2)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    assert await batcher.submit("k", 7) == 7


async def test_update_changes_limits_live():
    rec = Recorder()
    batcher = KeyedBatcher(rec.run, BatchSettings(max_batch_size=2, batch_wait_timeout_s=0.05))
    await asyncio.gather(*(batcher.submit("k", n) for n in range(4)))
    batcher.update(BatchSettings(max_batch_size=4, batch_wait_timeout_s=0.05))
    await asyncio.gather(*(batcher.submit("k", n) for n in range(4)))
    assert [len(b) for b in rec.batches] == [2, 2, 4]


@pytest.mark.parametrize("size", [1, 3])
async def test_timeout_flushes_partial_batches(size):
    rec = Recorder()
    batcher = KeyedBatcher(rec.run, BatchSettings(max_batch_size=8, batch_wait_timeout_s=0.01))
    await asyncio.gather(*(batcher.submit("k", n) for n in range(size)))
    assert [len(b) for b in rec.batches] == [size]


async def test_queue_depth_is_reported_as_items_arrive_not_only_per_batch():
    rec = Recorder(delay=0.05)
    depths: list[int] = []
    batcher = KeyedBatcher(
        rec.run,
        BatchSettings(max_batch_size=1, batch_wait_timeout_s=0),
        on_queued=depths.append,
    )
    first = asyncio.ensure_future(batcher.submit("k", "running"))
    await asyncio.sleep(0.01)  # the first batch is running
    rest = [asyncio.ensure_future(batcher.submit("k", f"q{n}")) for n in range(3)]
    await asyncio.sleep(0)
    assert depths[-3:] == [1, 2, 3]  # seen while the batch was still running
    await asyncio.gather(first, *rest)
    assert depths[-1] == 0


async def test_callers_word_decides_how_long_a_batch_waits():
    rec = Recorder()
    coming = {"more": True}
    settings = BatchSettings(max_batch_size=8, batch_wait_timeout_s=2.0, max_linger_s=1.0)
    batcher = KeyedBatcher(rec.run, settings, linger=lambda _items: coming["more"])
    loop = asyncio.get_running_loop()

    # More is on its way: the batch waits past nothing but its own linger for it.
    first = asyncio.ensure_future(batcher.submit("k", "a"))
    await asyncio.sleep(0.3)
    assert not rec.batches  # still waiting for the announced chunk
    coming["more"] = False  # the last chunk says nothing more is coming: run at once
    started = loop.time()
    await asyncio.gather(first, batcher.submit("k", "b"))
    assert rec.batches == [["a", "b"]]
    assert loop.time() - started < 0.5  # not the 2 s classic timeout

    # Word that more is coming is trusted only for max_linger_s.
    coming["more"] = True
    started = loop.time()
    await batcher.submit("k", "c")
    assert 0.9 < loop.time() - started < 1.8
    assert rec.batches[-1] == ["c"]


async def test_no_word_falls_back_to_the_classic_timeout():
    rec = Recorder()
    settings = BatchSettings(max_batch_size=8, batch_wait_timeout_s=0.2, max_linger_s=5.0)
    batcher = KeyedBatcher(rec.run, settings, linger=lambda _items: None)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await batcher.submit("k", "a")
    assert 0.15 < loop.time() - started < 1.0


async def test_background_batches_stay_small_while_interactive_work_arrives():
    rec = Recorder(delay=0.05)
    settings = BatchSettings(
        max_batch_size=8, batch_wait_timeout_s=0.01, busy_background_batch_size=2
    )
    batcher = KeyedBatcher(rec.run, settings, urgent_priority=10)
    # Alone, background work fills whole batches.
    await asyncio.gather(*(batcher.submit("job", f"a{n}", priority=0) for n in range(8)))
    assert [len(b) for b in rec.batches] == [8]
    # With interactive work around, a job's batches shrink so the next urgent one waits less.
    rec.batches.clear()
    jobs = [asyncio.ensure_future(batcher.submit("job", f"b{n}", priority=0)) for n in range(8)]
    live = asyncio.ensure_future(batcher.submit("live", "x", priority=10))
    await asyncio.gather(live, *jobs)
    assert rec.batches[0] == ["x"]
    assert all(len(b) <= 2 for b in rec.batches[1:]) and len(rec.batches) == 5


async def test_an_urgent_batch_takes_no_background_work_of_the_same_key():
    rec = Recorder(delay=0.05)
    settings = BatchSettings(max_batch_size=8, batch_wait_timeout_s=0, busy_background_batch_size=2)
    batcher = KeyedBatcher(rec.run, settings, urgent_priority=10)
    blocker = asyncio.ensure_future(batcher.submit("k", "blocker", priority=0))
    await asyncio.sleep(0.01)
    jobs = [asyncio.ensure_future(batcher.submit("k", f"job{n}", priority=0)) for n in range(3)]
    live = [asyncio.ensure_future(batcher.submit("k", f"live{n}", priority=10)) for n in range(2)]
    await asyncio.gather(blocker, *jobs, *live)
    assert rec.batches[1] == ["live0", "live1"]  # first, and alone
    assert sorted(rec.batches[2]) == ["job0", "job1"]  # busy: background batches of 2


async def test_a_steady_interactive_stream_cannot_starve_background_work():
    rec = Recorder(delay=0.02)
    settings = BatchSettings(max_batch_size=1, batch_wait_timeout_s=0, busy_window_s=0.1)
    batcher = KeyedBatcher(rec.run, settings, urgent_priority=10)
    job = asyncio.ensure_future(batcher.submit("k", "job", priority=0))
    live = [asyncio.ensure_future(batcher.submit("k", f"live{n}", priority=10)) for n in range(20)]
    await asyncio.wait_for(asyncio.gather(job, *live), timeout=10)
    order = [b[0] for b in rec.batches]
    # The job waited busy_window_s (about 5 batches) and then got the next turn, not the 21st.
    assert order.index("job") <= 8, order


class Overlap(Recorder):
    """Records how many batches ran at the same moment."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.running = 0
        self.most = 0

    async def run(self, items):
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            return await super().run(items)
        finally:
            self.running -= 1


@pytest.mark.parametrize("concurrency", [1, 2, 3])
async def test_at_most_concurrency_batches_run_at_once(concurrency):
    rec = Overlap(delay=0.05)
    batcher = KeyedBatcher(
        rec.run,
        BatchSettings(max_batch_size=2, batch_wait_timeout_s=0),
        concurrency=concurrency,
    )
    results = await asyncio.gather(*(batcher.submit("k", f"i{n}") for n in range(12)))
    assert results == [f"done:i{n}" for n in range(12)]
    assert rec.most == concurrency
    assert sorted(item for batch in rec.batches for item in batch) == sorted(
        f"i{n}" for n in range(12)
    )


async def test_a_free_worker_takes_what_queued_while_the_other_runs():
    rec = Overlap(delay=0.1)
    batcher = KeyedBatcher(
        rec.run, BatchSettings(max_batch_size=8, batch_wait_timeout_s=0), concurrency=2
    )
    first = asyncio.ensure_future(batcher.submit("k", "a"))
    await asyncio.sleep(0.02)  # "a" runs on one worker; the second is free
    second = asyncio.ensure_future(batcher.submit("k", "b"))
    await asyncio.sleep(0.02)  # "b" runs on the second; both busy now
    rest = [asyncio.ensure_future(batcher.submit("k", f"c{n}")) for n in range(5)]
    await asyncio.gather(first, second, *rest)
    assert [len(b) for b in rec.batches] == [1, 1, 5]
    assert rec.most == 2


def test_concurrency_must_be_positive():
    with pytest.raises(ValueError, match="concurrency"):
        KeyedBatcher(Recorder().run, BatchSettings(), concurrency=0)


@pytest.mark.parametrize(
    ("coming", "sizes"), [(False, [8, 8]), (True, [16]), (None, [16])], ids=str
)
async def test_idle_workers_split_a_queue_only_when_nothing_more_is_coming(coming, sizes):
    """16 packed clips fit one batch (a fifth of a slot each): with nothing more on its way
    and a second worker idle they go 8 + 8; while more is coming (or without word) the
    batch takes what it can, as it always did."""
    rec = Overlap(delay=0.05)
    batcher = KeyedBatcher(
        rec.run,
        BatchSettings(max_batch_size=8, batch_wait_timeout_s=0.02, max_linger_s=0.02),
        cost=lambda _item: 0.2,
        linger=lambda _items: coming,
        concurrency=2,
    )
    await asyncio.gather(*(batcher.submit("k", f"i{n}") for n in range(16)))
    assert sorted(len(b) for b in rec.batches) == sizes
    assert rec.most == len(sizes)


async def test_a_split_leaves_nothing_behind_with_one_worker_or_a_busy_one():
    rec = Overlap(delay=0.05)
    batcher = KeyedBatcher(
        rec.run,
        BatchSettings(max_batch_size=8, batch_wait_timeout_s=0),
        linger=lambda _items: False,
        concurrency=1,
    )
    await asyncio.gather(*(batcher.submit("k", f"i{n}") for n in range(5)))
    assert [len(b) for b in rec.batches] == [5]


async def test_a_worker_leaves_part_of_the_queue_to_one_that_is_about_to_be_free():
    """One clip runs alone on a worker; 15 more queue with nothing else coming. The other
    worker takes about half of the work left (the running clip counted), not all 15, and
    the first worker takes the rest once it is free."""
    rec = Overlap(delay=0.05)
    coming = [True]
    batcher = KeyedBatcher(
        rec.run,
        BatchSettings(max_batch_size=8, batch_wait_timeout_s=0, max_linger_s=0.01),
        cost=lambda _item: 0.2,
        linger=lambda _items: coming[0],
        concurrency=2,
    )
    coming[0] = False
    first = asyncio.ensure_future(batcher.submit("k", "first"))
    await asyncio.sleep(0.01)  # "first" runs alone
    await asyncio.gather(first, *(batcher.submit("k", f"i{n}") for n in range(15)))
    assert [len(b) for b in rec.batches] == [1, 8, 7]
    assert rec.most == 2


async def test_nothing_is_left_for_a_worker_that_stays_busy():
    """Unpacked clips, one slot each: 7 run on one worker, 8 queue with nothing coming.
    The free worker takes all 8; it leaves none for a worker busy as long as itself."""
    rec = Overlap(delay=0.1)
    coming = [True]
    batcher = KeyedBatcher(
        rec.run,
        BatchSettings(max_batch_size=8, batch_wait_timeout_s=0, max_linger_s=0.01),
        linger=lambda _items: coming[0],
        concurrency=2,
    )
    busy = [asyncio.ensure_future(batcher.submit("k", f"a{n}")) for n in range(7)]
    await asyncio.sleep(0.03)  # the 7 run together (more was said to be coming)
    coming[0] = False
    await asyncio.gather(*busy, *(batcher.submit("k", f"b{n}") for n in range(8)))
    assert [len(b) for b in rec.batches] == [7, 8]
