"""The numpy GE2E encoder: checkpoint reading without torch, features, embeddings."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from serve_app.inference.torch_pickle import CheckpointError, load_checkpoint
from serve_app.inference.voice_encoder import (
    HOP,
    PARTIAL_FRAMES,
    VoiceEncoder,
    mel_filters,
    mel_power_spectrogram,
    packaged_weights,
    partial_slices,
)
from tests.conversation import SENTENCES, speak


@pytest.fixture(scope="module")
def encoder() -> VoiceEncoder:
    return VoiceEncoder()


def test_packaged_checkpoint_reads_as_numpy_without_torch() -> None:
    state = load_checkpoint(packaged_weights())["model_state"]
    assert state["lstm.weight_ih_l0"].shape == (1024, 40)
    assert state["lstm.weight_hh_l2"].shape == (1024, 256)
    assert state["linear.weight"].shape == (256, 256)
    assert all(v.dtype == np.float32 for v in state.values())
    assert np.isfinite(state["lstm.weight_ih_l1"]).all()


def test_unpickler_refuses_other_globals(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            # Not `print`: once Ray is up in the process, it replaces builtins.print.
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump(0x1950A86A20F9469CFC6C, f)
        pickle.dump(1001, f)
        pickle.dump({}, f)
        pickle.dump({"model_state": Evil()}, f)
    with pytest.raises(CheckpointError, match=r"posix\.system"):
        load_checkpoint(path)


def test_mel_filters_are_slaney_triangles() -> None:
    filters = mel_filters()
    assert filters.shape == (40, 201)
    # Slaney norm: each triangle's area (in Hz) is 1, i.e. sum(weights) * 40 Hz per bin == 1.
    np.testing.assert_allclose(filters.sum(axis=1) * 40.0, 1.0, rtol=0.15)
    # 8 kHz is 15 + ln(8) / (ln(6.4) / 27) = 45.25 mel; 42 edges step 45.25 / 41 mel, and
    # below 1 kHz a mel is 200/3 Hz: centres at 73.6, 147.2, 220.8 Hz -> bins 2, 4, 6 (40 Hz).
    peaks = filters.argmax(axis=1)
    assert list(peaks[:3]) == [2, 4, 6]


def test_power_spectrum_of_a_tone_and_frame_count() -> None:
    t = np.arange(16000) / 16000
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    mel = mel_power_spectrogram(tone)
    assert mel.shape == (1 + 16000 // HOP, 40)
    band = int(np.argmax(mel[50]))
    centres = np.argmax(mel_filters(), axis=1) * 40.0
    assert abs(centres[band] - 1000) < 80
    # Power, not magnitude: doubling the amplitude multiplies the energy by four.
    np.testing.assert_allclose(mel_power_spectrogram(2 * tone)[50], 4 * mel[50], rtol=1e-4)


def test_partials_cover_the_clip_like_resemblyzer() -> None:
    # 1.6 s: exactly one partial. At rate 1.3 partials start every round(16000/1.3/160) = 77
    # frames; 3 s = 301 frames: starts 0, 77, 154, and the last covers (48000 - 24640) / 25600
    # = 91 % of its samples (kept); 2.5 s: the third covers 60 % (< 75 %: dropped).
    assert partial_slices(PARTIAL_FRAMES * HOP, 1.3) == [slice(0, 160)]
    assert partial_slices(48000, 1.3) == [slice(0, 160), slice(77, 237), slice(154, 314)]
    assert partial_slices(40000, 1.3) == [slice(0, 160), slice(77, 237)]


def test_same_voice_is_closer_than_other_voices(encoder: VoiceEncoder) -> None:
    clips = [
        speak("en-us", SENTENCES[0]),
        speak("en-us", SENTENCES[1]),
        speak("en-us+f5", SENTENCES[0]),
        speak("en+Michael", SENTENCES[1]),
    ]
    emb = encoder.embed_clips(clips)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert (emb >= 0).all()  # after the ReLU
    sim = emb @ emb.T
    same = sim[0, 1]
    assert same > 0.85
    assert same > sim[0, 2] + 0.1 and same > sim[0, 3] + 0.1
    assert same > sim[1, 2] + 0.1 and same > sim[1, 3] + 0.1
    # Batch composition does not change an embedding.
    np.testing.assert_allclose(encoder.embed_clips(clips[:1])[0], emb[0], atol=1e-5)


def test_onnxruntime_network_gives_the_numpy_embeddings(encoder: VoiceEncoder) -> None:
    from serve_app.inference.voice_encoder_onnx import OnnxVoiceEncoder

    fast = OnnxVoiceEncoder(threads=1)
    clips = [speak("en-us", SENTENCES[0]), speak("en+Michael", SENTENCES[1])]
    mels = np.concatenate([encoder.partial_mels(clip) for clip in clips])
    np.testing.assert_allclose(fast.embed_partials(mels), encoder.embed_partials(mels), atol=1e-5)
    np.testing.assert_allclose(fast.embed_clips(clips), encoder.embed_clips(clips), atol=1e-5)
    assert fast.embed_partials(mels[:0]).shape == (0, 256)
