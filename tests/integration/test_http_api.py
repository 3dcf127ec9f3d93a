"""The OpenAI-compatible HTTP surface on the real deployed app."""

from __future__ import annotations

import itertools
import re

import pytest

from tests.integration.conftest import transcribe
from tests.text import wer

pytestmark = pytest.mark.integration

SRT_CUE = re.compile(r"^\d+\n\d{2}:\d{2}:\d{2},\d{3} --> \d{2}:\d{2}:\d{2},\d{3}\n.+$", re.S)
VTT_TIME = re.compile(r"^\d{2}:\d{2}:\d{2}\.\d{3} --> \d{2}:\d{2}:\d{2}\.\d{3}$")


def test_json_returns_the_right_words(http, data_dir, reference_texts):
    response = transcribe(http, data_dir / "weather.wav", model="tiny.en")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    text = response.json()["text"]
    assert wer(reference_texts["weather.wav"], text) < 0.2, text


def test_text_format(http, data_dir):
    response = transcribe(http, data_dir / "hello.wav", model="tiny.en", response_format="text")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "speech recognition" in response.text.lower()


def test_srt_is_valid_and_ordered(http, data_dir):
    response = transcribe(http, data_dir / "story.flac", model="tiny.en", response_format="srt")
    assert response.status_code == 200, response.text
    cues = [c for c in response.text.strip().split("\n\n") if c]
    assert len(cues) >= 3
    previous_end = -1.0
    for number, cue in enumerate(cues, start=1):
        assert SRT_CUE.match(cue), cue
        index, times, _text = cue.split("\n", 2)
        assert int(index) == number
        start, end = (_seconds(t.replace(",", ".")) for t in times.split(" --> "))
        assert start <= end <= 44.0
        assert start >= previous_end - 0.01
        previous_end = end


def test_vtt_is_valid(http, data_dir):
    response = transcribe(http, data_dir / "kitchen.wav", model="tiny.en", response_format="vtt")
    assert response.status_code == 200
    lines = response.text.splitlines()
    assert lines[0] == "WEBVTT"
    times = [line for line in lines if "-->" in line]
    assert times and all(VTT_TIME.match(t) for t in times)
    assert "kitchen" in response.text.lower()


def test_verbose_json_with_word_timestamps(http, data_dir):
    response = transcribe(
        http,
        data_dir / "story.flac",
        model="tiny.en",
        response_format="verbose_json",
        **{"timestamp_granularities[]": ["word", "segment"]},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == "transcribe"
    assert body["language"] == "en"
    assert 42 < body["duration"] < 44
    words = body["words"]
    assert len(words) > 60
    for a, b in itertools.pairwise(words):
        assert a["start"] <= a["end"] <= body["duration"] + 0.5
        assert a["start"] <= b["start"] + 0.01
    assert {w["word"].lower().strip(".,") for w in words} >= {"village", "forest", "lake"}
    segments = body["segments"]
    assert [s["id"] for s in segments] == list(range(1, len(segments) + 1))
    assert all(s["start"] <= s["end"] for s in segments)


def test_language_detection_on_multilingual_model(http, data_dir):
    response = transcribe(
        http, data_dir / "german.wav", model="base", response_format="verbose_json"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["language"] == "de"
    assert "morgen" in body["text"].lower()


def test_translation_endpoint(http, data_dir):
    with (data_dir / "german.wav").open("rb") as handle:
        response = http.post(
            "/v1/audio/translations",
            files={"file": ("german.wav", handle)},
            data={"model": "base", "response_format": "verbose_json"},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == "translate"
    assert body["language"] == "de"
    assert "morning" in body["text"].lower()


def test_alias_and_default_model(http, data_dir):
    for data in ({"model": "whisper-1"}, {}):
        response = transcribe(http, data_dir / "hello.wav", **data)
        assert response.status_code == 200, response.text
        assert "hello" in response.json()["text"].lower()


def test_models_health_and_docs(http):
    models = http.get("/v1/models").json()
    ids = {m["id"]: m for m in models["data"]}
    assert set(ids) == {"tiny.en", "whisper-1", "base"}
    assert ids["base"]["multilingual"] is True and ids["tiny.en"]["multilingual"] is False
    assert http.get("/v1/models/whisper-1").json()["root"] == "tiny.en"
    assert http.get("/healthz").json()["status"] == "ok"
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["models"] == {
        "tiny.en": "ready",
        "base": "ready",
    }
    assert http.get("/docs").status_code == 200
    paths = http.get("/openapi.json").json()["paths"]
    assert "/v1/audio/transcriptions" in paths and "/v1/audio/translations" in paths


def _seconds(stamp: str) -> float:
    hours, minutes, seconds = stamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
