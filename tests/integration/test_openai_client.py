"""The official `openai` client works against the service unchanged."""

from __future__ import annotations

import pytest
from openai import OpenAI

pytestmark = pytest.mark.integration


@pytest.fixture
def client(whisper_app) -> OpenAI:
    return OpenAI(base_url=whisper_app.url + "/v1", api_key="unused", max_retries=0, timeout=300)


def test_transcriptions_create(client, data_dir):
    with (data_dir / "train.wav").open("rb") as audio:
        result = client.audio.transcriptions.create(model="whisper-1", file=audio)
    assert "every morning" in result.text.lower()


def test_verbose_json_with_words(client, data_dir):
    with (data_dir / "kitchen.wav").open("rb") as audio:
        result = client.audio.transcriptions.create(
            model="tiny.en",
            file=audio,
            response_format="verbose_json",
            timestamp_granularities=["word"],
            language="en",
        )
    assert result.language == "en"
    assert result.duration == pytest.approx(4.33, abs=0.05)
    assert result.words and all(w.start <= w.end for w in result.words)
    assert "kettle" in result.text.lower() or "kitchen" in result.text.lower()


def test_text_and_srt_formats(client, data_dir):
    with (data_dir / "hello.wav").open("rb") as audio:
        text = client.audio.transcriptions.create(
            model="tiny.en", file=audio, response_format="text"
        )
    assert "hello" in str(text).lower()
    with (data_dir / "hello.wav").open("rb") as audio:
        srt = client.audio.transcriptions.create(model="tiny.en", file=audio, response_format="srt")
    assert "-->" in str(srt)


def test_translations_create(client, data_dir):
    with (data_dir / "german.wav").open("rb") as audio:
        result = client.audio.translations.create(model="base", file=audio)
    assert "morning" in result.text.lower()


def test_errors_surface_as_openai_errors(client, data_dir):
    import openai

    with (data_dir / "hello.wav").open("rb") as audio, pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(model="no-such-model", file=audio)
    assert err.value.status_code == 400
    assert err.value.body["code"] == "model_not_found"


def test_new_fields_pass_through_extra_body(client, data_dir, direct_pipelines):
    path = data_dir / "numbers.wav"
    segments, info = direct_pipelines["tiny.en"].transcribe(
        str(path),
        batch_size=8,
        beam_size=2,
        hotwords="five",
        word_timestamps=True,
        without_timestamps=False,
        vad_parameters={"threshold": 0.5, "speech_pad_ms": 300, "min_silence_duration_ms": 160},
    )
    expected = "".join(s.text for s in segments).strip()
    with path.open("rb") as audio:
        result = client.audio.transcriptions.create(
            model="tiny.en",
            file=audio,
            response_format="verbose_json",
            include=["logprobs"],
            timestamp_granularities=["word"],
            extra_body={
                "beam_size": 2,
                "hotwords": "five",
                "chunking_strategy": {"type": "server_vad", "prefix_padding_ms": 300},
                "suppress_tokens": [-1],
                "a_field_from_the_future": "ignored",
            },
        )
    assert result.text == expected
    body = result.model_dump()
    assert body["usage"] == {"type": "duration", "seconds": pytest.approx(info.duration, abs=0.1)}
    assert body["language"] == "en" and body["language_probability"] == 1.0
    logprobs = body["logprobs"]
    assert [entry["token"].strip() for entry in logprobs] == [w.word for w in result.words]
    assert all(entry["logprob"] <= 0 for entry in logprobs)


def test_json_carries_usage(client, data_dir):
    with (data_dir / "hello.wav").open("rb") as audio:
        result = client.audio.transcriptions.create(
            model="tiny.en", file=audio, include=["logprobs"]
        )
    assert result.usage is not None and result.usage.type == "duration"
    assert result.usage.seconds == pytest.approx(4.5, abs=0.6)
    assert result.logprobs and all(lp.logprob <= 0 for lp in result.logprobs)
