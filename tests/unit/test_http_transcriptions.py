"""The OpenAI-compatible HTTP surface, in-process: real tiny.en replica, no Ray, no server."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.text import wer
from tests.unit.conftest import LOOP, assert_error

pytestmark = LOOP

SRT_CUE = re.compile(r"^\d+\n\d{2}:\d{2}:\d{2},\d{3} --> \d{2}:\d{2}:\d{2},\d{3}\n.+$", re.S)
VTT_TIME = re.compile(r"^\d{2}:\d{2}:\d{2}\.\d{3} --> \d{2}:\d{2}:\d{2}\.\d{3}$")


async def transcribe(
    client: httpx.AsyncClient,
    audio: Path | bytes,
    path: str = "/v1/audio/transcriptions",
    **data: Any,
) -> httpx.Response:
    if isinstance(audio, Path):
        name, content = audio.name, audio.read_bytes()
    else:
        name, content = "audio.wav", audio
    return await client.post(path, files={"file": (name, content)}, data=data)


def _seconds(stamp: str) -> float:
    hours, minutes, seconds = stamp.replace(",", ".").split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


# ---- formats -------------------------------------------------------------------------------


async def test_json_text_matches_the_reference(client, data_dir, reference_texts):
    response = await transcribe(client, data_dir / "hello.wav", model="tiny.en")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"text", "usage"}
    assert body["usage"] == {"type": "duration", "seconds": pytest.approx(4.5, abs=0.5)}
    assert wer(reference_texts["hello.wav"], body["text"]) < 0.2, body["text"]


async def test_every_response_carries_its_time_budget(client, data_dir):
    response = await transcribe(client, data_dir / "hello.wav", response_format="text")
    assert response.status_code == 200, response.text
    phases = {
        name: float(duration.removeprefix("dur="))
        for name, duration in (
            p.strip().split(";") for p in response.headers["server-timing"].split(",")
        )
    }
    wanted = {"read", "decode", "vad", "language", "chunks", "queue", "batch", "assemble", "render"}
    assert wanted | {"total"} <= set(phases)
    assert all(ms >= 0 for ms in phases.values())
    assert phases["batch"] > 0 and phases["total"] >= phases["batch"] + phases["decode"]


async def test_alias_and_default_model(client, data_dir, reference_texts):
    for data in ({"model": "whisper-1"}, {}):
        response = await transcribe(client, data_dir / "train.wav", **data)
        assert response.status_code == 200, response.text
        assert "every morning" in response.json()["text"].lower()


async def test_text_format(client, data_dir):
    response = await transcribe(client, data_dir / "hello.wav", response_format="text")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.endswith("\n") and not response.text.endswith("\n\n")
    assert "speech recognition" in response.text.lower()


async def test_srt_cues_are_valid_and_ordered(client, data_dir):
    response = await transcribe(client, data_dir / "numbers.wav", response_format="srt")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-subrip")
    cues = [c for c in response.text.strip().split("\n\n") if c]
    assert cues
    previous_end = -1.0
    for number, cue in enumerate(cues, start=1):
        assert SRT_CUE.match(cue), cue
        index, times, _text = cue.split("\n", 2)
        assert int(index) == number
        start, end = (_seconds(t) for t in times.split(" --> "))
        assert previous_end - 0.01 <= start <= end <= 10.0
        previous_end = end
    assert "lunch" in response.text.lower()


async def test_vtt_is_valid(client, data_dir):
    response = await transcribe(client, data_dir / "train.wav", response_format="vtt")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/vtt")
    lines = response.text.splitlines()
    assert lines[0] == "WEBVTT" and lines[1] == ""
    times = [line for line in lines if "-->" in line]
    assert times and all(VTT_TIME.match(t) for t in times), times
    assert "platform" in response.text.lower()


async def test_verbose_json_with_words_and_segments(client, data_dir, reference_texts):
    response = await transcribe(
        client,
        data_dir / "hello.wav",
        response_format="verbose_json",
        **{"timestamp_granularities[]": ["word", "segment"]},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == "transcribe" and body["language"] == "en"
    assert body["model"] == "tiny.en"
    assert 4.0 < body["duration"] < 5.0
    assert wer(reference_texts["hello.wav"], body["text"]) < 0.2, body["text"]
    segments = body["segments"]
    assert [s["id"] for s in segments] == list(range(1, len(segments) + 1))
    assert "".join(s["text"] for s in segments).strip() == body["text"]
    for segment in segments:
        assert 0 <= segment["start"] <= segment["end"] <= body["duration"] + 0.5
        assert segment["tokens"] and segment["temperature"] == 0.0
    words = body["words"]
    assert "".join(w["word"] for w in words) == body["text"].replace(" ", "")
    for a, b in itertools.pairwise(words):
        assert a["start"] <= a["end"] <= body["duration"] + 0.5
        assert a["start"] <= b["start"] + 0.01
    assert all(0.0 <= w["probability"] <= 1.0 for w in words)


async def test_verbose_json_with_words_only_leaves_out_segments(client, data_dir):
    response = await transcribe(
        client,
        data_dir / "hello.wav",
        response_format="verbose_json",
        **{"timestamp_granularities[]": "word"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "segments" not in body
    assert [w["word"].lower().strip(".,") for w in body["words"]][:2] == ["hello", "world"]


async def test_verbose_json_without_granularities_has_segments_only(client, data_dir):
    response = await transcribe(client, data_dir / "hello.wav", response_format="verbose_json")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["segments"] and "words" not in body


async def test_unknown_form_fields_are_ignored(client, data_dir):
    response = await transcribe(
        client, data_dir / "hello.wav", chunking_strategy="auto", include="logprobs"
    )
    assert response.status_code == 200, response.text
    assert "hello" in response.json()["text"].lower()


# ---- models and health ---------------------------------------------------------------------


async def test_models_list_and_lookup(client):
    response = await client.get("/v1/models")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    cards = {m["id"]: m for m in body["data"]}
    assert set(cards) == {"tiny.en", "whisper-1"}
    for card in cards.values():
        assert card["object"] == "model" and card["root"] == "tiny.en"
        assert card["multilingual"] is False
    alias = await client.get("/v1/models/whisper-1")
    assert alias.status_code == 200 and alias.json()["root"] == "tiny.en"
    assert_error(await client.get("/v1/models/large-v9"), 404, "model_not_found")


async def test_health_and_readiness(client):
    health = await client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ok", "models": {"tiny.en": "ready"}}


async def test_openapi_lists_the_routes(client):
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/v1/audio/transcriptions", "/v1/audio/translations", "/v1/jobs"} <= set(paths)


# ---- errors --------------------------------------------------------------------------------


async def test_translation_on_an_english_only_model(client, data_dir):
    response = await transcribe(
        client, data_dir / "hello.wav", "/v1/audio/translations", model="tiny.en"
    )
    assert_error(response, 400, "bad_request")
    assert "English-only" in response.json()["error"]["message"]


async def test_unknown_model(client, data_dir):
    response = await transcribe(client, data_dir / "hello.wav", model="large-v9")
    assert_error(response, 400, "model_not_found")


async def test_empty_file(client):
    assert_error(await transcribe(client, b""), 400, "empty_file")


@pytest.mark.parametrize(
    "payload",
    [b"<html>", b"<!doctype html><html><body>hi</body></html>", b"#EXTM3U\n#EXTINF:10,\nx.ts\n"],
)
async def test_text_is_not_audio(client, payload):
    assert_error(await transcribe(client, payload), 415, "unsupported_media_type")


async def test_garbage_bytes_are_not_a_known_format(client):
    assert_error(await transcribe(client, bytes(range(256)) * 40), 415, "unsupported_media_type")


async def test_truncated_audio_is_undecodable(client, data_dir):
    wav = (data_dir / "train.wav").read_bytes()
    assert_error(await transcribe(client, wav[: len(wav) // 3]), 422, "undecodable_audio")


async def test_invalid_parameters(client, data_dir):
    hello = data_dir / "hello.wav"
    assert_error(await transcribe(client, hello, temperature="7"), 400, "bad_request")
    assert_error(await transcribe(client, hello, temperature="-0.5"), 400, "bad_request")
    assert_error(await transcribe(client, hello, beam_size="0"), 400, "bad_request")
    assert_error(await transcribe(client, hello, response_format="docx"), 400, "bad_request")
    assert_error(await transcribe(client, hello, language="xx"), 400, "bad_request")
    assert_error(await transcribe(client, hello, **{"timestamp_granularities[]": "sentence"}), 400)


async def test_granularities_are_ignored_by_formats_without_timestamps(client, data_dir):
    # As OpenAI does: only verbose_json carries timestamps; other formats ignore the field.
    for fmt in ("json", "srt", "text"):
        response = await transcribe(
            client,
            data_dir / "hello.wav",
            response_format=fmt,
            **{"timestamp_granularities[]": "word"},
        )
        assert response.status_code == 200, response.text
        if fmt == "json":
            assert "words" not in response.json()


async def test_missing_file_and_unknown_route(client):
    assert_error(
        await client.post("/v1/audio/transcriptions", data={"model": "tiny.en"}), 400, "bad_request"
    )
    assert_error(await client.get("/v1/nothing-here"), 404, "not_found")
    assert_error(await client.get("/v1/audio/transcriptions"), 405, "method_not_allowed")


async def test_service_still_serves_after_bad_input(client, data_dir):
    await transcribe(client, b"<html>")
    await transcribe(client, b"")
    response = await transcribe(client, data_dir / "hello.wav")
    assert response.status_code == 200 and "hello" in response.json()["text"].lower()


# ---- the official OpenAI client ------------------------------------------------------------


def _openai(http: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url="http://whisper.local/v1", api_key="x", http_client=http, max_retries=0
    )


async def test_openai_client_json(stack, data_dir, reference_texts):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=stack.app)) as http:
        ai = _openai(http)
        with (data_dir / "hello.wav").open("rb") as audio:
            result = await ai.audio.transcriptions.create(model="whisper-1", file=audio)
    assert wer(reference_texts["hello.wav"], result.text) < 0.2, result.text


async def test_openai_client_verbose_json_with_words(stack, data_dir):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=stack.app)) as http:
        ai = _openai(http)
        with (data_dir / "train.wav").open("rb") as audio:
            result = await ai.audio.transcriptions.create(
                model="tiny.en",
                file=audio,
                response_format="verbose_json",
                timestamp_granularities=["word", "segment"],
            )
    assert result.language == "en" and result.duration > 4
    assert result.words and result.segments
    assert "".join(w.word for w in result.words) == result.text.replace(" ", "")
    assert all(w.start <= w.end for w in result.words)
    assert result.segments[0].start <= result.segments[-1].end


async def test_openai_client_sees_api_errors(stack, data_dir):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=stack.app)) as http:
        ai = _openai(http)
        with pytest.raises(openai.BadRequestError) as raised:
            await ai.audio.transcriptions.create(model="large-v9", file=("a.wav", b"RIFF"))
    assert raised.value.status_code == 400
    assert raised.value.body["code"] == "model_not_found"
