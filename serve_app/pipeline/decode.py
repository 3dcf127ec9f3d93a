"""Decode untrusted audio to 16 kHz mono float32, mapping failures to client errors.

Decoding mirrors `faster_whisper.audio.decode_audio` sample for sample (same resampler,
same frame grouping) so transcripts equal a direct faster-whisper run, but it maps failures
to precise client errors and enforces duration limits while decoding. It runs in the
sandboxed child processes of `serve_app.pipeline.sandbox`, never on a replica's own heap.
"""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

from serve_app.errors import (
    AudioTooLong,
    EmptyFile,
    TooManyChannels,
    UndecodableAudio,
    UnsupportedMedia,
)

SAMPLE_RATE = 16000
# A decode that yields less than this share of the length the container declares was cut off.
_TRUNCATION_RATIO = 0.9
_TEXT_PREFIXES = (b"<", b"{", b"[", b"#EXTM3U", b"%PDF", b"\xef\xbb\xbf<")


@dataclass
class DecodedAudio:
    samples: np.ndarray  # (n,) mono, or (channels, n) when decoded with `channels=True`
    declared_duration: float | None

    @property
    def duration(self) -> float:
        return self.samples.shape[-1] / SAMPLE_RATE


def sniff_not_audio(head: bytes) -> bool:
    """True for payloads that are obviously text (HTML, JSON, playlists, PDFs)."""
    stripped = head.lstrip()
    return stripped.startswith(_TEXT_PREFIXES)


def decode_audio(
    data: bytes,
    *,
    max_duration_s: float,
    timeout_s: float = 120.0,
    max_channels: int | None = None,
) -> DecodedAudio:
    """Decode container bytes; raise a ServiceError subclass for anything a client got wrong.

    `max_channels` set: keep the channels apart (multichannel=true), samples (channels, n);
    more channels than that is a 400.
    """
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
        channels = None
        if max_channels is not None:
            channels = stream.codec_context.channels or 1
            if channels > max_channels:
                raise TooManyChannels(
                    f"the audio has {channels} channels; multichannel takes at most {max_channels}"
                )
        samples = _decode_stream(container, stream, max_duration_s, timeout_s, channels)
    if samples.size == 0:
        raise UndecodableAudio("no audio samples could be decoded from the file")
    decoded = DecodedAudio(samples=samples, declared_duration=declared)
    if declared and declared > 1.0 and decoded.duration < declared * _TRUNCATION_RATIO:
        raise UndecodableAudio(
            f"audio is truncated: the header declares {declared:.2f} s "
            f"but only {decoded.duration:.2f} s could be decoded"
        )
    return decoded


def _decode_stream(
    container, stream, max_duration_s: float, timeout_s: float, channels: int | None = None
) -> np.ndarray:
    # Channels kept apart: resampled as one frame of that many channels, interleaved s16.
    layout = "mono" if channels is None else stream.layout.name
    resampler = av.audio.resampler.AudioResampler(format="s16", layout=layout, rate=SAMPLE_RATE)
    max_samples = int(max_duration_s * SAMPLE_RATE) * (channels or 1)
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
    if channels is not None:
        pcm = pcm[: pcm.size - pcm.size % channels].reshape(-1, channels).T
        return np.ascontiguousarray(pcm, dtype=np.float32) / 32768.0
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
