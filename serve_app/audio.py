"""Decode untrusted audio to 16 kHz mono float32 and cut it into ≤30 s VAD chunks.

Decoding mirrors `faster_whisper.audio.decode_audio` sample for sample (same resampler,
same frame grouping) so transcripts equal a direct faster-whisper run, but it maps failures
to precise client errors and enforces duration limits while decoding. `DecoderPool` runs it
in child processes bounded in memory and wall time, for bytes from untrusted clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import av
import numpy as np
from faster_whisper.vad import (
    SpeechTimestampsMap,
    VadOptions,
    collect_chunks,
    get_speech_timestamps,
)

from serve_app.errors import (
    AudioTooLong,
    DecoderFailed,
    EmptyFile,
    ServiceError,
    UndecodableAudio,
    UnsupportedMedia,
)
from serve_app.results import Segment, Word

SAMPLE_RATE = 16000
CHUNK_LENGTH_S = 30
# A decode that yields less than this share of the length the container declares was cut off.
_TRUNCATION_RATIO = 0.9
_TEXT_PREFIXES = (b"<", b"{", b"[", b"#EXTM3U", b"%PDF", b"\xef\xbb\xbf<")


@dataclass
class DecodedAudio:
    samples: np.ndarray
    declared_duration: float | None

    @property
    def duration(self) -> float:
        return self.samples.shape[0] / SAMPLE_RATE


@dataclass
class ChunkPlan:
    """VAD chunks of one audio and what is needed to map times back to the original."""

    chunks: list[np.ndarray]
    metadata: list[dict]
    speech_timestamps: list[dict] = field(default_factory=list)
    duration: float = 0.0

    @property
    def duration_after_vad(self) -> float:
        return sum(ts["end"] - ts["start"] for ts in self.speech_timestamps) / SAMPLE_RATE


def sniff_not_audio(head: bytes) -> bool:
    """True for payloads that are obviously text (HTML, JSON, playlists, PDFs)."""
    stripped = head.lstrip()
    return stripped.startswith(_TEXT_PREFIXES)


def decode_audio(
    data: bytes,
    *,
    max_duration_s: float,
    timeout_s: float = 120.0,
) -> DecodedAudio:
    """Decode container bytes; raise a ServiceError subclass for anything a client got wrong."""
    if not data:
        raise EmptyFile("the uploaded file is empty")
    if sniff_not_audio(data[:64]):
        raise UnsupportedMedia("the upload is text, not audio")
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise UnsupportedMedia(f"not a recognised audio format: {_ff_reason(exc)}") from exc
    with container:
        if not container.streams.audio:
            raise UnsupportedMedia("the file has no audio stream")
        stream = container.streams.audio[0]
        declared = _wav_declared_duration(data) or _declared_duration(container, stream)
        if declared is not None and declared > max_duration_s * 1.05:
            raise AudioTooLong(
                f"audio is {declared:.0f} s long; the limit is {max_duration_s:.0f} s"
            )
        samples = _decode_stream(container, stream, max_duration_s, timeout_s)
    if samples.size == 0:
        raise UndecodableAudio("no audio samples could be decoded from the file")
    decoded = DecodedAudio(samples=samples, declared_duration=declared)
    if declared and declared > 1.0 and decoded.duration < declared * _TRUNCATION_RATIO:
        raise UndecodableAudio(
            f"audio is truncated: the header declares {declared:.2f} s "
            f"but only {decoded.duration:.2f} s could be decoded"
        )
    return decoded


def _decode_stream(container, stream, max_duration_s: float, timeout_s: float) -> np.ndarray:
    resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    max_samples = int(max_duration_s * SAMPLE_RATE)
    deadline = time.monotonic() + timeout_s
    buffer = io.BytesIO()
    total = 0
    frames = _group_frames(_valid_frames(container.decode(stream)), 500000)
    try:
        for frame in _resample(frames, resampler):
            array = frame.to_ndarray()
            buffer.write(array)
            total += array.shape[-1]
            if total > max_samples:
                raise AudioTooLong(f"audio is longer than the limit of {max_duration_s:.0f} s")
            if time.monotonic() > deadline:
                raise UndecodableAudio(f"decoding took longer than {timeout_s:.0f} s")
    except av.error.FFmpegError as exc:
        raise UndecodableAudio(f"audio could not be decoded: {_ff_reason(exc)}") from exc
    pcm = np.frombuffer(buffer.getbuffer(), dtype=np.int16)
    return pcm.astype(np.float32) / 32768.0


def _valid_frames(frames: Iterator) -> Iterator:
    # Like faster-whisper: skip single corrupt packets instead of failing the whole file.
    skipped = 0
    while True:
        try:
            yield next(frames)
        except StopIteration:
            return
        except av.error.InvalidDataError:
            skipped += 1
            if skipped > 1000:
                raise


def _group_frames(frames: Iterator, num_samples: int) -> Iterator:
    fifo = av.audio.fifo.AudioFifo()
    for frame in frames:
        frame.pts = None  # the fifo checks timestamps; decoded timestamps may jump
        fifo.write(frame)
        if fifo.samples >= num_samples:
            yield fifo.read()
    if fifo.samples > 0:
        yield fifo.read()


def _resample(frames: Iterator, resampler) -> Iterator:
    for frame in itertools.chain(frames, [None]):  # None flushes the resampler
        yield from resampler.resample(frame)


def _wav_declared_duration(data: bytes) -> float | None:
    """Duration a RIFF/WAVE header promises (FFmpeg trusts the file size instead)."""
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, byte_rate = 12, 0
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk_id == b"fmt " and pos + 16 <= len(data):
            byte_rate = int.from_bytes(data[pos + 16 : pos + 20], "little")
        elif chunk_id == b"data":
            if not byte_rate or size in (0, 0xFFFFFFFF):  # streaming writers leave it unset
                return None
            return size / byte_rate
        pos += 8 + size + (size & 1)
    return None


def _declared_duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _ff_reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


# ---- bounded decoding of untrusted input ---------------------------------------------------

_FRAME = struct.Struct(">II")  # header length, payload length
_MAX_HEADER = 64 * 1024
_MAX_INPUT = 1 << 34
_KILL_GRACE_S = 2.0  # the child stops itself at timeout_s; it is killed if it cannot
_CHILD_ERRORS: dict[str, type[ServiceError]] = {
    cls.__name__: cls for cls in (EmptyFile, UnsupportedMedia, UndecodableAudio, AudioTooLong)
}
_WORKER_BOOT = "import sys; from serve_app.audio import decode_worker_main; decode_worker_main()"


class DecoderPool:
    """Runs `decode_audio` on untrusted bytes in child processes bounded in memory and time.

    Each child caps its own address space (RLIMIT_AS, `max_memory_mb` beyond its start-up
    size) and is killed when a decode outlives its timeout, so a crafted file can neither
    hang nor exhaust the calling replica. Samples come back as raw float32 bytes (no pickle
    from the process that parsed the untrusted file), identical to an in-process decode.
    """

    def __init__(self, workers: int = 2, max_memory_mb: int = 3072) -> None:
        self.max_memory_mb = max_memory_mb
        self._slots = asyncio.Semaphore(workers)
        self._idle: list[_DecodeWorker] = []

    async def decode(self, data: bytes, *, max_duration_s: float, timeout_s: float) -> DecodedAudio:
        async with self._slots:
            worker = self._idle.pop() if self._idle else None
            if worker is None or worker.proc.poll() is not None:  # none idle, or it died
                worker = await asyncio.to_thread(_DecodeWorker, self.max_memory_mb)
            try:
                return await asyncio.wait_for(
                    asyncio.to_thread(worker.exchange, data, max_duration_s, timeout_s),
                    timeout=timeout_s + _KILL_GRACE_S,
                )
            except TimeoutError:
                raise DecoderFailed(f"decoding took longer than {timeout_s:.0f} s") from None
            finally:
                # Reuse only a child that finished the exchange; kill one stopped mid-way.
                if worker.reusable:
                    self._idle.append(worker)
                else:
                    worker.kill()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().kill()


class _DecodeWorker:
    def __init__(self, max_memory_mb: int) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = "1"  # numpy's thread pools only reserve address space here
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_BOOT, str(max_memory_mb)],  # argv[1]
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self.reusable = False

    def exchange(self, data: bytes, max_duration_s: float, timeout_s: float) -> DecodedAudio:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.reusable = False
        limit = int(max_duration_s * SAMPLE_RATE) * 4 + (1 << 20)
        try:
            _write_frame(self.proc.stdin, {"max_s": max_duration_s, "timeout_s": timeout_s}, data)
            header, payload = _read_frame(self.proc.stdout, limit)
        except (OSError, EOFError, ValueError) as exc:
            raise DecoderFailed("the audio decoder crashed on this file") from exc
        self.reusable = True
        declared = header.get("declared")
        if header.get("ok") is True and len(payload) % 4 == 0:
            declared = float(declared) if isinstance(declared, int | float) else None
            return DecodedAudio(np.frombuffer(payload, dtype=np.float32), declared)
        message = str(header.get("message") or "the audio could not be decoded")[:500]
        error = _CHILD_ERRORS.get(str(header.get("error")))
        if error is None:
            raise ServiceError(f"audio decoder failed: {message}")
        raise error(message)

    def kill(self) -> None:
        self.reusable = False
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL is never ignored
            self.proc.wait(timeout=5)
        for stream in filter(None, (self.proc.stdin, self.proc.stdout)):
            stream.close()


def decode_worker_main() -> None:
    """Body of a decode child: requests on stdin, replies on the original stdout."""
    max_memory_mb = int(sys.argv[1])
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints from native libraries must not corrupt the protocol
    requests = sys.stdin.buffer
    _limit_address_space(max_memory_mb)
    while True:
        try:
            header, data = _read_frame(requests, _MAX_INPUT)
        except EOFError:
            return  # the parent closed the pipe or died
        payload: Any = b""  # raw little-endian float32 samples on success
        try:
            decoded = decode_audio(
                bytes(data), max_duration_s=header["max_s"], timeout_s=header["timeout_s"]
            )
            reply: dict[str, Any] = {"ok": True, "declared": decoded.declared_duration}
            payload = memoryview(np.ascontiguousarray(decoded.samples)).cast("B")
        except ServiceError as exc:
            reply = {"ok": False, "error": type(exc).__name__, "message": exc.message}
        except MemoryError:
            message = f"decoding this file needs more than {max_memory_mb} MiB"
            reply = {"ok": False, "error": "UndecodableAudio", "message": message}
        except Exception as exc:  # a decoder bug: report it (a 500), keep serving
            reply = {"ok": False, "error": "internal", "message": f"{type(exc).__name__}: {exc}"}
        del data
        _write_frame(replies, reply, payload)


def _limit_address_space(extra_mb: int) -> None:
    try:
        import resource

        with open("/proc/self/status", encoding="ascii") as status:
            size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
    except (ImportError, OSError, StopIteration, ValueError):
        return  # not Linux: the wall-clock limit still applies
    limit = size + extra_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _write_frame(stream: IO[bytes], header: dict[str, Any], payload: Any) -> None:
    head = json.dumps(header).encode()
    stream.write(_FRAME.pack(len(head), len(payload)) + head)
    stream.write(payload)
    stream.flush()


def _read_frame(stream: IO[bytes], max_payload: int) -> tuple[dict[str, Any], bytearray]:
    head_len, payload_len = _FRAME.unpack(_read_exact(stream, _FRAME.size))
    if head_len > _MAX_HEADER or payload_len > max_payload:
        raise ValueError("decoder frame exceeds its bounds")
    header = json.loads(bytes(_read_exact(stream, head_len)))
    if not isinstance(header, dict):
        raise ValueError("decoder frame header is not an object")
    return header, _read_exact(stream, payload_len)


def _read_exact(stream: IO[bytes], size: int) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            raise EOFError("decoder pipe closed")
        got += n
    return buffer


def plan_chunks(samples: np.ndarray) -> ChunkPlan:
    """Cut audio into ≤30 s speech chunks exactly as `BatchedInferencePipeline` does."""
    vad = VadOptions(max_speech_duration_s=CHUNK_LENGTH_S, min_silence_duration_ms=160)
    speech = get_speech_timestamps(samples, vad)
    duration = samples.shape[0] / SAMPLE_RATE
    if not speech:
        return ChunkPlan(chunks=[], metadata=[], speech_timestamps=[], duration=duration)
    chunks, metadata = collect_chunks(samples, speech, max_duration=CHUNK_LENGTH_S)
    keep = [i for i, c in enumerate(chunks) if c.size > 0]
    return ChunkPlan(
        chunks=[chunks[i] for i in keep],
        metadata=[metadata[i] for i in keep],
        speech_timestamps=speech,
        duration=duration,
    )


def restore_timestamps(segments: list[Segment], plan: ChunkPlan) -> list[Segment]:
    """Map segment/word times from the speech-only timeline back to the original audio.

    Mirrors `faster_whisper.transcribe.restore_speech_timestamps`.
    """
    if not plan.speech_timestamps:
        return segments
    ts_map = SpeechTimestampsMap(plan.speech_timestamps, SAMPLE_RATE)
    for segment in segments:
        if segment.words:
            words: list[Word] = []
            for word in segment.words:
                chunk_index = ts_map.get_chunk_index((word.start + word.end) / 2)
                word.start = ts_map.get_original_time(word.start, chunk_index)
                word.end = ts_map.get_original_time(word.end, chunk_index)
                words.append(word)
            segment.start = words[0].start
            segment.end = words[-1].end
            segment.words = words
        else:
            segment.start = ts_map.get_original_time(segment.start)
            segment.end = ts_map.get_original_time(segment.end, is_end=True)
    return segments
