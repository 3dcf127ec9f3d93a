from __future__ import annotations

from serve_app.http.formats import format_timestamp, render
from serve_app.http.schemas import TranscriptionJSON, VerboseTranscription
from serve_app.options import DecodeOptions
from serve_app.results import Segment, TranscriptionResult, Word


def _result() -> TranscriptionResult:
    segments = [
        Segment(
            1,
            0,
            0.0,
            2.5,
            " Hello there.",
            [1],
            -0.1,
            1.0,
            0.01,
            0.0,
            [Word(0.0, 0.8, " Hello", 0.9), Word(0.9, 2.5, " there.", 0.8)],
        ),
        Segment(
            2,
            0,
            3661.0,
            3662.25,
            " Bye.",
            [2],
            -0.2,
            1.0,
            0.02,
            0.0,
            [Word(3661.0, 3662.25, " Bye.", 0.7)],
        ),
        Segment(3, 0, 3663.0, 3663.5, "   ", [3], -0.2, 1.0, 0.02, 0.0, None),
    ]
    return TranscriptionResult(
        text="Hello there. Bye.",
        language="en",
        language_probability=1.0,
        duration=3700.0,
        duration_after_vad=4.0,
        segments=segments,
        model="tiny.en",
        options=DecodeOptions(),
    )


def test_timestamps():
    assert format_timestamp(0, ",") == "00:00:00,000"
    assert format_timestamp(3661.2345, ".") == "01:01:01.234"
    assert format_timestamp(-1, ",") == "00:00:00,000"


def test_srt_and_vtt_skip_empty_cues():
    srt = render(_result(), "srt")
    assert srt == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n01:01:01,000 --> 01:01:02,250\nBye.\n"
    )
    vtt = render(_result(), "vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n")


def test_json_text_and_verbose():
    result = _result()
    json_body = render(result, "json")
    assert isinstance(json_body, TranscriptionJSON) and json_body.text == "Hello there. Bye."
    assert json_body.usage is not None and json_body.usage.seconds == result.duration
    assert json_body.logprobs is None
    assert render(result, "text") == "Hello there. Bye.\n"
    body = _json(render(result, "verbose_json", frozenset({"word"})))
    assert body["task"] == "transcribe" and body["language"] == "en"
    assert body["usage"] == {"type": "duration", "seconds": result.duration}
    assert "language_probability" in body
    assert [w["word"] for w in body["words"]] == ["Hello", "there.", "Bye."]
    assert "segments" not in body
    body = _json(render(result, "verbose_json"))
    assert [s["id"] for s in body["segments"]] == [1, 2, 3] and "words" not in body


def _json(body: object) -> dict:
    assert isinstance(body, VerboseTranscription)
    return body.model_dump(mode="json", exclude_none=True)


def test_result_round_trips_through_json():
    result = _result()
    assert TranscriptionResult.from_json(result.to_json()) == result


def test_logprobs_are_per_word():
    result = _result()
    body = render(result, "json", logprobs=True)
    assert isinstance(body, TranscriptionJSON) and body.logprobs is not None
    assert [entry.token.strip() for entry in body.logprobs] == ["Hello", "there.", "Bye."]
    assert all(entry.logprob <= 0 for entry in body.logprobs)
    assert body.logprobs[0].bytes == list(body.logprobs[0].token.encode())
