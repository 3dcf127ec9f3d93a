from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from serve_app.inference.packing.decode import _cut_short, _frames, _own_tokens, _Row, _rows_view

TOKENIZER = SimpleNamespace(eot=100, timestamp_begin=1000)  # text tokens are < 100


def ts(seconds: float) -> int:
    return 1000 + round(seconds / 0.02)


ROW = _Row(window=0, position=1, start=6.0, end=10.0, limit=20.0, prompt=[1, 2, ts(6.0)])


def test_row_keeps_its_clip_and_drops_what_follows():
    generated = [ts(6.0), 5, 6, ts(9.5), ts(9.5), 7, ts(9.9), ts(12.0), 8, 9, ts(15.0)]
    assert _own_tokens(TOKENIZER, generated, ROW, gap_s=1.5) == generated[:7]


def test_text_that_runs_past_the_clip_fails_the_row():
    # The other clips are silenced, so text running straight on to a timestamp past the
    # clip means the decoder jumped out of its clip mid-speech: decode the clip alone.
    generated = [ts(6.0), 5, 6, 7, 8, ts(14.0), ts(14.0), 9]
    assert _own_tokens(TOKENIZER, generated, ROW, gap_s=1.5) is None
    assert _own_tokens(TOKENIZER, [ts(6.0), 5, ts(20.68), ts(20.68)], ROW, gap_s=1.5) is None


def test_unterminated_text_is_closed_at_the_clip_end():
    assert _own_tokens(TOKENIZER, [ts(6.0), 5, 6], ROW, gap_s=1.5) == [ts(6.0), 5, 6, ts(10.0)]
    assert _own_tokens(TOKENIZER, [5], ROW, gap_s=1.5) == [ts(6.0), 5, ts(10.0)]


def test_a_row_cut_by_the_budget_is_redone_only_if_it_never_left_its_clip():
    def result(tokens):
        return SimpleNamespace(sequences_ids=[tokens])

    max_length = len(ROW.prompt) + 6
    stopped_early = result([ts(6.0), 5, ts(8.0)])
    left_clip = result([ts(6.0), 5, ts(9.0), ts(12.0), 6, 7])
    inside = result([ts(6.0), 5, 6, 7, 8, 9])
    assert not _cut_short(TOKENIZER, ROW, stopped_early, max_length, gap_s=1.5)
    assert not _cut_short(TOKENIZER, ROW, left_clip, max_length, gap_s=1.5)
    assert _cut_short(TOKENIZER, ROW, inside, max_length, gap_s=1.5)


def test_frames_are_20_ms_and_never_negative():
    assert _frames(1.0) == 50 and _frames(-0.5) == 0
    assert np.isclose(_frames(29.98), 1499)


def test_each_row_sees_only_its_clip_and_silence_around_it():
    encoded = np.ones((1, 1500, 4), dtype=np.float32)  # one window's encoding
    silence = np.zeros((1500, 4), dtype=np.float32)
    rows = [
        _Row(window=0, position=0, start=0.0, end=4.0, limit=10.0, prompt=[]),
        _Row(window=0, position=1, start=5.5, end=10.0, limit=10.0, prompt=[]),
    ]
    cpu_model = SimpleNamespace(model=SimpleNamespace(device="cpu"))
    view = np.array(_rows_view(cpu_model, encoded, rows, silence, gap_s=1.5))
    assert view.shape == (2, 1500, 4)
    first, second = view[:, :, 0]
    assert first[:237].all() and not first[238:].any()  # 4.0 s + 0.75 s = frame 237.5
    assert not second[:237].any() and second[238:538].all() and not second[538:].any()
    assert encoded.all()  # the shared encoding itself is untouched
