"""Bounded decoding of untrusted audio: child processes capped in memory and wall time."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from serve_app.errors import AudioTooLong, UndecodableAudio, UnsupportedMedia
from serve_app.pipeline.decode import decode_audio
from serve_app.pipeline.sandbox import DecoderPool


@pytest.fixture
def pool() -> Iterator[DecoderPool]:
    decoder = DecoderPool(workers=1, max_memory_mb=256)
    yield decoder
    decoder.close()


@pytest.fixture(scope="module")
def silent_hour(tmp_path_factory) -> bytes:
    """200 KB of FLAC that decodes to 57.6 M samples (230 MB as float32)."""
    path = tmp_path_factory.mktemp("bomb") / "silence.flac"
    argv = ["sox", "-n", "-r", "16000", "-c", "1", str(path), "trim", "0", "3600"]
    subprocess.run(argv, check=True)
    return path.read_bytes()


def _child_pid(pool: DecoderPool) -> int:
    (worker,) = pool._idle
    return worker.proc.pid


@pytest.mark.parametrize("name", ["hello.wav", "story.flac", "german.wav"])
async def test_samples_equal_in_process_and_faster_whisper_decodes(pool, data_dir, name):
    from faster_whisper.audio import decode_audio as fw_decode

    data = (data_dir / name).read_bytes()
    decoded = await pool.decode(data, max_duration_s=600, timeout_s=60)
    reference = decode_audio(data, max_duration_s=600)
    assert decoded.samples.dtype == np.float32
    assert np.array_equal(decoded.samples, reference.samples)
    assert decoded.declared_duration == reference.declared_duration
    assert np.array_equal(decoded.samples, fw_decode(str(data_dir / name)))


async def test_client_errors_cross_the_process_boundary(pool, data_dir):
    with pytest.raises(UnsupportedMedia):
        await pool.decode(b"<html>nope</html>", max_duration_s=600, timeout_s=30)
    with pytest.raises(AudioTooLong):
        await pool.decode((data_dir / "story.flac").read_bytes(), max_duration_s=10, timeout_s=30)
    child = _child_pid(pool)
    await pool.decode((data_dir / "hello.wav").read_bytes(), max_duration_s=600, timeout_s=30)
    assert _child_pid(pool) == child  # a refused file does not cost a new process


async def test_decompression_bomb_hits_the_memory_cap(data_dir, silent_hour):
    small = DecoderPool(workers=1, max_memory_mb=64)
    try:
        # The cap trips in numpy (MemoryError → "…MiB") or inside FFmpeg (ENOMEM).
        with pytest.raises(UndecodableAudio, match=r"MiB|memory"):
            await small.decode(silent_hour, max_duration_s=4 * 3600, timeout_s=60)
        hello = (data_dir / "hello.wav").read_bytes()
        decoded = await small.decode(hello, max_duration_s=600, timeout_s=30)
        assert decoded.samples.size > 16000
    finally:
        small.close()


async def test_a_hung_decoder_is_killed_at_the_deadline(pool, data_dir):
    hello = (data_dir / "hello.wav").read_bytes()
    await pool.decode(hello, max_duration_s=600, timeout_s=30)
    stuck = _child_pid(pool)
    os.kill(stuck, signal.SIGSTOP)  # as good as a decoder spinning forever on a crafted file
    started = time.monotonic()
    with pytest.raises(UndecodableAudio, match="longer than"):
        await pool.decode(hello, max_duration_s=600, timeout_s=1)
    assert time.monotonic() - started < 10
    assert not Path(f"/proc/{stuck}").exists() or _is_zombie(stuck)
    decoded = await pool.decode(hello, max_duration_s=600, timeout_s=30)
    assert decoded.samples.size > 16000 and _child_pid(pool) != stuck


async def test_a_crashing_decoder_is_a_422_and_is_replaced(data_dir, silent_hour):
    roomy = DecoderPool(workers=1, max_memory_mb=2048)
    try:
        hello = (data_dir / "hello.wav").read_bytes()
        await roomy.decode(hello, max_duration_s=600, timeout_s=30)
        victim = _child_pid(roomy)
        threading.Timer(0.3, os.kill, (victim, signal.SIGKILL)).start()
        with pytest.raises(UndecodableAudio, match="crashed"):
            await roomy.decode(silent_hour, max_duration_s=4 * 3600, timeout_s=60)
        decoded = await roomy.decode(hello, max_duration_s=600, timeout_s=30)
        assert decoded.samples.size > 16000 and _child_pid(roomy) != victim
    finally:
        roomy.close()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
