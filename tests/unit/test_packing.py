from __future__ import annotations

import numpy as np

from serve_app.config import PackingSettings
from serve_app.inference.packing.decode import window_features
from serve_app.inference.packing.plan import plan_windows, slot_cost
from serve_app.inference.packing.split import clip_segments
from serve_app.inference.protocol import ChunkRequest
from serve_app.options import DecodeOptions

SETTINGS = PackingSettings(max_clip_s=20, window_s=28, gap_s=1.0)  # not the defaults


def clip(duration: float, tenant: str = "a", pack: bool = True, offset: float = 0.0):
    audio = np.full(int(duration * 16000), 0.1, dtype=np.float32)
    return ChunkRequest(
        audio, offset, duration, DecodeOptions(language="en"), tenant=tenant, pack=pack
    )


def test_windows_never_mix_tenants_and_respect_the_length():
    items = [clip(5, "a"), clip(5, "b"), clip(6, "a"), clip(7, "b"), clip(9, "a"), clip(9, "a")]
    windows = plan_windows(items, SETTINGS)
    for window in windows:
        assert len({items[i].tenant for i in window.items}) == 1
        end = window.starts[-1] + items[window.items[-1]].duration
        assert end <= SETTINGS.window_s
    assert sorted(i for w in windows for i in w.items) == list(range(len(items)))
    assert [w.items for w in windows] == [[0, 2, 4], [1, 3], [5]]
    assert windows[0].starts == [0.0, 6.0, 13.0]


def test_long_and_opted_out_chunks_get_their_own_window():
    items = [clip(25), clip(3, pack=False), clip(3), clip(3)]
    windows = plan_windows(items, SETTINGS)
    assert [w.items for w in windows] == [[0], [1], [2, 3]]
    assert slot_cost(items[0], SETTINGS) == 1.0 and slot_cost(items[1], SETTINGS) == 1.0
    assert slot_cost(items[2], SETTINGS) == (3 + 1) / 28


def test_starts_fall_on_encoder_frames():
    items = [clip(2.013), clip(3.0), clip(1.5)]
    window = plan_windows(items, SETTINGS)[0]
    for start in window.starts:
        assert abs(start / 0.02 - round(start / 0.02)) < 1e-6
    assert window.starts[1] >= 2.013 + SETTINGS.gap_s


def test_window_features_place_each_clip_featurised_alone():
    items = [clip(2), clip(3)]
    window = plan_windows(items, SETTINGS)[0]
    loud = {id(items[0].audio): 5.0, id(items[1].audio): 1.0}

    def features(audio):  # stands in for the log-mel: one column per 10 ms, a per-clip value
        return np.full((80, round(audio.shape[0] / 160)), loud[id(audio)], dtype=np.float32)

    mels = window_features(window, items, features)
    assert mels.shape == (80, 3000)
    assert np.all(mels[:, :200] == 5.0)
    assert np.all(mels[:, 200:300] == 0.0)  # the gap is the padding a lone clip sees
    assert np.all(mels[:, 300:600] == 1.0)  # not rescaled against the louder neighbour
    assert np.all(mels[:, 600:] == 0.0)


def test_clip_keeps_its_own_words_relative_to_the_clip():
    items = [clip(2, offset=10.0), clip(3, offset=0.0)]
    window = plan_windows(items, SETTINGS)[0]  # clips at 0-2 s and 3-6 s
    first_row = [
        {
            "words": [
                {"word": " one", "start": 0.1, "end": 0.6, "probability": 0.9},
                {"word": " two", "start": 0.7, "end": 2.3, "probability": 0.9},  # past the end
                {"word": " three", "start": 3.1, "end": 3.8, "probability": 0.8},  # ran on
            ],
            "tokens": [1, 2, 3],
            "avg_logprob": -0.2,
            "compression_ratio": 1.1,
            "no_speech_prob": 0.01,
        }
    ]
    second_row = [
        {
            "words": [
                {"word": " three", "start": 2.6, "end": 3.8, "probability": 0.8},
                {"word": " four", "start": 5.5, "end": 6.4, "probability": 0.8},
            ],
            "tokens": [3, 4],
            "avg_logprob": -0.3,
            "compression_ratio": 1.0,
            "no_speech_prob": 0.02,
        }
    ]
    (first,) = clip_segments(first_row, window, 0, items, SETTINGS.gap_s, keep_words=True)
    assert first.text == " one two"
    assert first.start == 10.1 and first.end == 12.0  # clamped to the clip, + offset
    assert first.tokens == []  # a word was dropped, so the row's tokens are not the clip's
    (second,) = clip_segments(second_row, window, 1, items, SETTINGS.gap_s, keep_words=True)
    assert second.text == " three four" and second.tokens == [3, 4]
    assert second.start == 0.0 and second.end == 3.0
    assert all(0 <= w.start <= w.end <= 3.0 for w in second.words)
    (bare,) = clip_segments(first_row, window, 0, items, SETTINGS.gap_s, keep_words=False)
    assert bare.words is None
