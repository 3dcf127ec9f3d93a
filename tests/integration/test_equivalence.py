"""The service's transcript equals a direct faster-whisper BatchedInferencePipeline run."""

from __future__ import annotations

import pytest

from tests.integration.conftest import transcribe

pytestmark = pytest.mark.integration

CLIPS = ["hello.wav", "weather.wav", "numbers.wav", "kitchen.wav", "train.wav", "story.flac"]


def _direct(pipeline, path, **options) -> tuple[str, object]:
    segments, info = pipeline.transcribe(str(path), batch_size=8, **options)
    return "".join(s.text for s in segments).strip(), info


@pytest.mark.parametrize("clip", CLIPS)
def test_tiny_en_matches_direct_pipeline(http, data_dir, direct_pipelines, clip):
    expected, _ = _direct(direct_pipelines["tiny.en"], data_dir / clip)
    response = transcribe(http, data_dir / clip, model="tiny.en")
    assert response.status_code == 200, response.text
    assert response.json()["text"] == expected


def test_long_clip_spans_several_chunks(http, data_dir, direct_pipelines):
    # verbose_json asks for segment timestamps, i.e. without_timestamps=False.
    expected, info = _direct(
        direct_pipelines["tiny.en"], data_dir / "story.flac", without_timestamps=False
    )
    assert info.duration > 30
    response = transcribe(
        http, data_dir / "story.flac", model="tiny.en", response_format="verbose_json"
    )
    body = response.json()
    assert body["text"] == expected
    assert len(body["segments"]) >= 2
    assert body["segments"][-1]["end"] > 30


@pytest.mark.parametrize("clip", ["german.wav", "weather.wav"])
def test_base_with_language_detection_matches(http, data_dir, direct_pipelines, clip):
    expected, info = _direct(direct_pipelines["base"], data_dir / clip, without_timestamps=False)
    response = transcribe(http, data_dir / clip, model="base", response_format="verbose_json")
    body = response.json()
    assert body["language"] == info.language
    assert body["text"] == expected


def test_word_timestamps_match(http, data_dir, direct_pipelines):
    segments, _ = direct_pipelines["tiny.en"].transcribe(
        str(data_dir / "numbers.wav"),
        batch_size=8,
        word_timestamps=True,
        without_timestamps=False,
    )
    expected = [(w.word.strip(), w.start, w.end) for s in segments for w in s.words]
    response = transcribe(
        http,
        data_dir / "numbers.wav",
        model="tiny.en",
        response_format="verbose_json",
        **{"timestamp_granularities[]": "word"},
    )
    got = [(w["word"], w["start"], w["end"]) for w in response.json()["words"]]
    assert [w for w, _, _ in got] == [w for w, _, _ in expected]
    for (_, s1, e1), (_, s2, e2) in zip(got, expected, strict=True):
        assert s1 == pytest.approx(s2, abs=0.02) and e1 == pytest.approx(e2, abs=0.02)
