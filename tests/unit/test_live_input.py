"""The realtime input buffer (`serve_app.pipeline.live`): resampling, streaming VAD, turns."""

from __future__ import annotations

import itertools

import av
import numpy as np
import pytest
from faster_whisper.vad import get_vad_model

from serve_app.errors import AudioTooLong, BadRequest, EmptyAudioBuffer
from serve_app.pipeline.decode import decode_audio
from serve_app.pipeline.live import (
    WINDOW,
    LiveInput,
    Resampler,
    ServerVad,
    SpeechStarted,
    SpeechStopped,
    StreamingVad,
    Utterance,
)
from tests.unit.live_support import pcm16, wav_bytes

RATE = 24000


def _decode(data: bytes) -> np.ndarray:
    return decode_audio(data, max_duration_s=600, timeout_s=30).samples


@pytest.fixture(scope="module")
def hello_24k(data_dir) -> np.ndarray:
    """hello.wav (4.4 s) as 24 kHz PCM16, resampled by libswresample."""
    samples = _decode((data_dir / "hello.wav").read_bytes())
    resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=RATE)
    frame = av.AudioFrame.from_ndarray(pcm16(samples).reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 16000
    parts = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(parts).astype("<i2")


def _feed(live: LiveInput, pcm: np.ndarray, step_s: float = 0.1) -> list:
    step = int(live.rate * step_s)
    events = []
    for i in range(0, pcm.size, step):
        events += live.append(pcm[i : i + step])
    return events


def test_streaming_resampler_equals_the_file_decoder(hello_24k):
    resampler = Resampler(RATE)
    pieces = [resampler(hello_24k[i : i + 2400]) for i in range(0, hello_24k.size, 2400)]
    streamed = np.concatenate(pieces)
    whole = _decode(wav_bytes(hello_24k, RATE))
    assert 0 <= whole.size - streamed.size <= 16  # the resampler's delay, flushed at EOF only
    assert np.array_equal(streamed, whole[: streamed.size])


def test_streaming_vad_equals_one_pass(data_dir):
    audio = _decode((data_dir / "hello.wav").read_bytes())
    audio = audio[: audio.size // WINDOW * WINDOW]
    whole = np.asarray(get_vad_model()(audio)).reshape(-1)
    vad = StreamingVad()
    windows = audio.reshape(-1, WINDOW)
    pieces = [vad(windows[i : i + 3]) for i in range(0, windows.shape[0], 3)]
    assert np.allclose(np.concatenate(pieces), whole, atol=1e-6)


def test_server_vad_finds_two_turns_with_padding_and_silence(hello_24k):
    silence = np.zeros(RATE, dtype="<i2")
    audio = np.concatenate([silence, hello_24k, silence, silence, hello_24k, silence])
    vad = ServerVad(threshold=0.5, prefix_padding_ms=300, silence_duration_ms=500)
    live = LiveInput(RATE, vad, max_buffered_s=60, max_utterance_s=30)
    events = _feed(live, audio)
    kinds = [type(e) for e in events]
    assert kinds == [SpeechStarted, SpeechStopped, Utterance] * 2
    first_start, first_stop, first = events[:3]
    assert 500 <= first_start.audio_start_ms <= 1000  # speech at ~1.0 s, minus 300 ms padding
    assert first.start_ms == first_start.audio_start_ms
    assert first.end_ms == first_stop.audio_end_ms
    assert 5000 <= first_stop.audio_end_ms <= 6200  # hello ends at ~5.4 s, + 500 ms silence
    second_start = events[3]
    assert 6800 <= second_start.audio_start_ms <= 7500  # the second hello starts at 7.4 s
    for utterance in (first, events[5]):
        assert 4.0 < utterance.duration < 5.6 and utterance.samples.dtype == np.float32
    assert not live.speaking and live.buffered_s <= 0.4  # idle: only the padding is kept


def test_long_speech_is_cut_at_the_utterance_limit(hello_24k):
    speech = np.concatenate([hello_24k] * 3)  # 13 s of talk, pauses of < 500 ms only
    live = LiveInput(
        RATE, ServerVad(silence_duration_ms=2000), max_buffered_s=60, max_utterance_s=5
    )
    events = _feed(live, speech)
    cuts = [e for e in events if isinstance(e, Utterance)]
    assert len(cuts) >= 2 and all(c.duration <= 5.0 + 1e-6 for c in cuts)
    assert all(b.start_ms == a.end_ms for a, b in itertools.pairwise(cuts))


def test_manual_commits_limits_and_clear(hello_24k):
    live = LiveInput(RATE, None, max_buffered_s=6, max_utterance_s=30)
    assert _feed(live, hello_24k) == []
    with pytest.raises(AudioTooLong):
        live.append(hello_24k)  # 4.4 s more would exceed 6 s
    utterance = live.commit()
    assert utterance.start_ms == 0 and 4300 < utterance.end_ms < 4500
    with pytest.raises(EmptyAudioBuffer):
        live.commit()
    live.append(hello_24k[: RATE // 20])  # 50 ms
    with pytest.raises(EmptyAudioBuffer, match="100 ms"):
        live.commit()
    live.clear()
    assert live.buffered_s == 0
    live.append(hello_24k[:RATE])
    assert live.commit().start_ms == utterance.end_ms + 50  # times continue across clears
    with pytest.raises(BadRequest, match="sample rate"):
        Resampler(44100)


def test_switching_to_vad_and_rates_midway(hello_24k):
    live = LiveInput(RATE, None, max_buffered_s=60, max_utterance_s=30)
    live.append(np.zeros(RATE, dtype="<i2"))
    live.configure(16000, ServerVad())  # new rate: the buffer is dropped
    assert live.buffered_s == 0
    hello_16k = pcm16(Resampler(RATE)(hello_24k))
    silence = np.zeros(16000, dtype="<i2")
    events = _feed(live, np.concatenate([silence, hello_16k, silence]))
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped, Utterance]
    assert 1500 <= events[0].audio_start_ms <= 2000  # 1 s before the switch + 0.7-1.0 s
