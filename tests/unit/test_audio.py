from __future__ import annotations

import io

import av
import numpy as np
import pytest
from faster_whisper.audio import decode_audio as fw_decode_audio

from serve_app.errors import AudioTooLong, EmptyFile, UndecodableAudio, UnsupportedMedia
from serve_app.pipeline.chunking import plan_chunks
from serve_app.pipeline.decode import SAMPLE_RATE, decode_audio, sniff_not_audio


def encode(samples: np.ndarray, container: str, codec: str, rate: int = 16000) -> bytes:
    """Encode float samples with PyAV into an in-memory file of another format."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        resampler = av.AudioResampler(
            format=stream.codec_context.format.name, layout="mono", rate=rate
        )
        for resampled in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(resampled):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def speech(data_dir) -> np.ndarray:
    return decode_audio((data_dir / "weather.wav").read_bytes(), max_duration_s=60).samples


def test_decode_matches_faster_whisper_exactly(data_dir):
    for name in ("hello.wav", "story.flac"):
        data = (data_dir / name).read_bytes()
        ours = decode_audio(data, max_duration_s=600).samples
        theirs = fw_decode_audio(io.BytesIO(data))
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize(
    ("container", "codec", "rate"),
    [
        ("mp3", "libmp3lame", 44100),
        ("flac", "flac", 16000),
        ("ogg", "libopus", 48000),
        ("ipod", "aac", 44100),
        ("wav", "pcm_s16le", 22050),
    ],
)
def test_common_formats_decode_to_16k(speech, container, codec, rate):
    data = encode(speech, container, codec, rate)
    decoded = decode_audio(data, max_duration_s=60)
    assert abs(decoded.duration - speech.shape[0] / SAMPLE_RATE) < 0.1
    assert np.abs(decoded.samples).max() > 0.05


def test_errors_are_precise(data_dir):
    with pytest.raises(EmptyFile):
        decode_audio(b"", max_duration_s=60)
    with pytest.raises(UnsupportedMedia):
        decode_audio(bytes(range(256)) * 10, max_duration_s=60)
    with pytest.raises(UnsupportedMedia):
        decode_audio(b"<html><body>not audio</body></html>", max_duration_s=60)
    wav = (data_dir / "train.wav").read_bytes()
    with pytest.raises(UndecodableAudio, match="truncated"):
        decode_audio(wav[: len(wav) // 2], max_duration_s=60)
    flac = (data_dir / "story.flac").read_bytes()
    with pytest.raises(UndecodableAudio, match="truncated"):
        decode_audio(flac[: len(flac) // 2], max_duration_s=600)
    with pytest.raises(AudioTooLong):
        decode_audio(flac, max_duration_s=10)


def test_sniffing():
    assert sniff_not_audio(b"  <!DOCTYPE html>")
    assert sniff_not_audio(b"#EXTM3U\n")
    assert sniff_not_audio(b'{"a": 1}')
    assert not sniff_not_audio(b"RIFF\x00\x00\x00\x00WAVE")
    assert not sniff_not_audio(b"fLaC")


def test_plan_chunks_splits_long_audio(data_dir):
    samples = decode_audio((data_dir / "story.flac").read_bytes(), max_duration_s=600).samples
    plan = plan_chunks(samples)
    assert len(plan.chunks) >= 2
    assert all(c.shape[0] <= 30 * SAMPLE_RATE for c in plan.chunks)
    assert [m["offset"] for m in plan.metadata] == sorted(m["offset"] for m in plan.metadata)
    assert 30 < plan.duration_after_vad <= plan.duration


def test_plan_of_silence_is_empty():
    plan = plan_chunks(np.zeros(SAMPLE_RATE * 3, dtype=np.float32))
    assert plan.chunks == [] and plan.duration == 3.0
