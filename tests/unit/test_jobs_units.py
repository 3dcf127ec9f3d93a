from __future__ import annotations

import asyncio

import pytest

from serve_app.errors import BackendUnavailable, BadRequest, UndecodableAudio
from serve_app.http.jobs import sse
from serve_app.inference.protocol import ChunkResult
from serve_app.jobs.eventlog import JobEventLog
from serve_app.jobs.retry import is_permanent
from serve_app.jobs.runner import chunk_to_record, record_to_chunk
from serve_app.jobs.webhooks import SignatureError, sign, verify
from serve_app.results import LanguageGuess, Segment, Word
from serve_app.security.netguard import check_url, is_public_address


def test_webhook_signature_round_trip_and_replay_window():
    body = b'{"a": 1}'
    header = sign("s3cret", body, timestamp=1_000_000)
    verify("s3cret", header, body, now=1_000_100)
    with pytest.raises(SignatureError, match="tolerance"):
        verify("s3cret", header, body, now=1_000_000 + 301)
    with pytest.raises(SignatureError, match="mismatch"):
        verify("other", header, body, now=1_000_000)
    with pytest.raises(SignatureError, match="malformed"):
        verify("s3cret", "garbage", body)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fc00::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
    ],
)
def test_private_addresses_are_not_public(address):
    assert not is_public_address(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses(address):
    assert is_public_address(address)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/a",
        "gopher://x",
        "http:///nohost",
        "http://127.0.0.1/a",
        "http://localhost/a",
        "http://[::1]/a",
        "http://2130706433/",
        "http://0x7f.1/",
    ],
)
def test_urls_refused_without_connecting(url):
    with pytest.raises(BadRequest):
        check_url(url, allow_private=False)


def test_private_urls_allowed_when_configured():
    check_url("http://127.0.0.1:9/a", allow_private=True)
    with pytest.raises(BadRequest):
        check_url("file:///etc/passwd", allow_private=True)


async def test_event_log_orders_and_wakes_waiters():
    log = JobEventLog()
    waiter = asyncio.ensure_future(log.since("j", 0, timeout_s=5))
    await asyncio.sleep(0)
    log.append("j", "progress", {"progress": 0.5})
    log.append("j", "done", {"status": "succeeded"})
    first = await waiter
    assert [e["seq"] for e in first] >= [1]
    every = await log.since("j", 0, timeout_s=0)
    assert [e["event"] for e in every] == ["progress", "done"]
    assert await log.since("j", 2, timeout_s=0.01) == []
    assert sse("done", every[1]).startswith("id: 2\nevent: done\ndata: {")


def test_checkpoint_records_round_trip():
    chunk = ChunkResult(
        segments=[
            Segment(0, 0, 1.0, 2.0, " hi", [1], -0.1, 1.0, 0.0, 0.0, [Word(1.0, 2.0, " hi", 0.9)])
        ],
        batch_size=3,
    )
    record = chunk_to_record(chunk, LanguageGuess("en", 0.9))
    assert record["language"] == "en"
    back = record_to_chunk(record)
    assert back.segments == chunk.segments and back.batch_size == 3


def test_permanent_errors():
    assert is_permanent(UndecodableAudio("x"))
    assert not is_permanent(BackendUnavailable("x"))
    assert not is_permanent(RuntimeError("x"))
