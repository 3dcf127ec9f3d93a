"""A sandbox for untrusted audio: decode in child processes bounded in memory and time.

The parent and a child speak a tiny framed protocol over pipes (a JSON header and a raw
payload per message), so samples come back as float32 bytes and nothing is unpickled from
the process that parsed the untrusted file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import subprocess
import sys
from typing import IO, Any

import numpy as np

from serve_app.errors import (
    AudioTooLong,
    DecoderFailed,
    EmptyFile,
    ServiceError,
    TooManyChannels,
    UndecodableAudio,
    UnsupportedMedia,
)
from serve_app.pipeline.decode import SAMPLE_RATE, DecodedAudio, decode_audio

_FRAME = struct.Struct(">II")  # header length, payload length
_MAX_HEADER = 64 * 1024
_MAX_INPUT = 1 << 34
_KILL_GRACE_S = 2.0  # the child stops itself at timeout_s; it is killed if it cannot
_CHILD_ERRORS: dict[str, type[ServiceError]] = {
    cls.__name__: cls
    for cls in (EmptyFile, UnsupportedMedia, UndecodableAudio, AudioTooLong, TooManyChannels)
}
_WORKER_BOOT = "from serve_app.pipeline.sandbox import decode_worker_main; decode_worker_main()"


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

    async def decode(
        self,
        data: bytes,
        *,
        max_duration_s: float,
        timeout_s: float,
        max_channels: int | None = None,
    ) -> DecodedAudio:
        async with self._slots:
            worker = self._idle.pop() if self._idle else None
            if worker is None or worker.proc.poll() is not None:  # none idle, or it died
                worker = await asyncio.to_thread(_DecodeWorker, self.max_memory_mb)
            try:
                return await asyncio.wait_for(
                    asyncio.to_thread(
                        worker.exchange, data, max_duration_s, timeout_s, max_channels
                    ),
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

    def exchange(
        self, data: bytes, max_duration_s: float, timeout_s: float, max_channels: int | None
    ) -> DecodedAudio:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.reusable = False
        limit = int(max_duration_s * SAMPLE_RATE) * 4 * (max_channels or 1) + (1 << 20)
        request = {"max_s": max_duration_s, "timeout_s": timeout_s, "channels": max_channels}
        try:
            _write_frame(self.proc.stdin, request, data)
            header, payload = _read_frame(self.proc.stdout, limit)
        except (OSError, EOFError, ValueError) as exc:
            raise DecoderFailed("the audio decoder crashed on this file") from exc
        self.reusable = True
        declared = header.get("declared")
        channels = header.get("channels")
        if header.get("ok") is True and len(payload) % 4 == 0:
            declared = float(declared) if isinstance(declared, int | float) else None
            samples = np.frombuffer(payload, dtype=np.float32)
            if isinstance(channels, int) and channels > 0 and max_channels is not None:
                samples = samples.reshape(channels, -1)
            return DecodedAudio(samples, declared)
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
                bytes(data),
                max_duration_s=header["max_s"],
                timeout_s=header["timeout_s"],
                max_channels=header.get("channels"),
            )
            reply: dict[str, Any] = {"ok": True, "declared": decoded.declared_duration}
            if decoded.samples.ndim == 2:
                reply["channels"] = decoded.samples.shape[0]
            payload = np.ascontiguousarray(decoded.samples).data.cast("B")
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
