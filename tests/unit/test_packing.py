from __future__ import annotations

import numpy as np

from serve_app.config import PackingSettings
from serve_app.packing import plan_windows, slot_cost, split_window, window_audio
from serve_app.results import ChunkRequest, DecodeOptions

SETTINGS = PackingSettings(max_clip_s=20, window_s=28, gap_s=1.0)  # not the defaults


def clip(duration: float, tenant: str = "a", packable: bool = True, offset: float = 0.0):
    audio = np.full(int(duration * 16000), 0.1, dtype=np.float32)
    return ChunkRequest(
        audio, offset, duration, DecodeOptions(language="en"), tenant=tenant, packable=packable
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
    items = [clip(25), clip(3, packable=False), clip(3), clip(3)]
    windows = plan_windows(items, SETTINGS)
    assert [w.items for w in windows] == [[0], [1], [2, 3]]
    assert slot_cost(items[0], SETTINGS) == 1.0 and slot_cost(items[1], SETTINGS) == 1.0
    assert slot_cost(items[2], SETTINGS) == (3 + 1) / 28


def test_window_audio_lays_clips_out_with_silence():
    items = [clip(2), clip(3)]
    window = plan_windows(items, SETTINGS)[0]
    audio = window_audio(window, items)
    assert abs(audio.shape[0] / 16000 - 6.0) < 0.01
    assert np.all(audio[2 * 16000 + 10 : 3 * 16000 - 10] == 0)
    assert np.all(audio[3 * 16000 + 10 : 6 * 16000 - 10] == np.float32(0.1))


def test_split_gives_each_clip_its_words_relative_to_the_clip():
    items = [clip(2, offset=10.0), clip(3, offset=0.0)]
    window = plan_windows(items, SETTINGS)[0]
    words = [
        {"word": " one", "start": 0.1, "end": 0.6, "probability": 0.9},
        {"word": " two", "start": 0.7, "end": 2.3, "probability": 0.9},  # runs past the clip
        {"word": " three", "start": 3.1, "end": 3.8, "probability": 0.8},
        {"word": " four", "start": 5.5, "end": 6.4, "probability": 0.8},
    ]
    segments = [
        {"words": words, "avg_logprob": -0.2, "compression_ratio": 1.1, "no_speech_prob": 0.01}
    ]
    first, second = split_window(segments, window, items, SETTINGS.gap_s, keep_words=True)
    assert first[0].text == " one two" and second[0].text == " three four"
    assert first[0].start == 10.1 and first[0].end == 12.0  # clamped to the clip, + offset
    assert second[0].start == 0.1 and second[0].end == 3.0
    assert all(0 <= w.start <= w.end <= 3.0 for w in second[0].words)
    bare, _ = split_window(segments, window, items, SETTINGS.gap_s, keep_words=False)
    assert bare[0].words is None
