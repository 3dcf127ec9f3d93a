"""`stream=true`: OpenAI's transcript.text.* events, in audio order, as chunks finish."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from faster_whisper.audio import decode_audio

from serve_app.inference.replica import ModelReplica
from serve_app.testing import LocalStack
from tests.text import wer
from tests.unit.conftest import LOOP, assert_error
from tests.unit.live_support import ScriptedModelClient, serving, sync_text, wav_bytes

pytestmark = LOOP


@pytest.fixture(scope="module")
def story(data_dir) -> bytes:
    """story.flac as WAV: two VAD chunks (29.8 s + 7.4 s)."""
    return wav_bytes(decode_audio(str(data_dir / "story.flac")))


@pytest.fixture(scope="module")
def long_story(data_dir) -> bytes:
    """story.flac twice: three VAD chunks (29.8 + 29.5 + 15.5 s)."""
    samples = decode_audio(str(data_dir / "story.flac"))
    return wav_bytes(np.concatenate([samples, samples]))


@contextmanager
def one_chunk_per_batch(replica: ModelReplica) -> Iterator[None]:
    """Live-tune the shared replica to decode one chunk per batch (as a busy one would)."""
    before = replica.batcher.settings
    replica.reconfigure(before.model_copy(update={"max_batch_size": 1}))
    try:
        yield
    finally:
        replica.reconfigure(before)


async def sse_stream(
    client: httpx.AsyncClient, audio: bytes, path: str = "/v1/audio/transcriptions", **data: Any
) -> list[dict[str, Any]]:
    """The events (data of each) of a stream=true response, to its end."""
    events = []
    form = {"stream": "true", **data}
    async with client.stream("POST", path, files={"file": ("a.wav", audio)}, data=form) as reply:
        assert reply.status_code == 200, await reply.aread()
        assert reply.headers["content-type"].startswith("text/event-stream")
        kind = None
        async for line in reply.aiter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                event = json.loads(line.split(":", 1)[1])
                assert event["type"] == kind
                events.append(event)
    return events


def _openai(stack: LocalStack) -> openai.AsyncOpenAI:
    """The official client, in-process (httpx's ASGI transport hands the body over whole)."""
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=stack.app), base_url="http://whisper.local"
    )
    return openai.AsyncOpenAI(
        base_url="http://whisper.local/v1", api_key="x", http_client=http, max_retries=0
    )


async def test_openai_client_stream_equals_sync_and_starts_after_one_batch(
    stack, client, replica, long_story
):
    reference = await sync_text(stack, long_story)
    recorder = ScriptedModelClient(stack)
    arrivals: list[tuple[float, Any]] = []
    # Over a real socket: the timing of the events is what this test is about.
    async with serving(stack.app) as url:
        ai = openai.AsyncOpenAI(base_url=url.replace("ws:", "http:") + "/v1", api_key="x")
        with one_chunk_per_batch(replica):
            stream = await ai.audio.transcriptions.create(
                model="whisper-1", file=("story2.wav", long_story), stream=True
            )
            async for event in stream:
                arrivals.append((time.monotonic(), event))
        await ai.close()
    kinds = [event.type for _, event in arrivals]
    assert kinds[-1] == "transcript.text.done" and kinds.count("transcript.text.done") == 1
    deltas = [(at, event.delta) for at, event in arrivals if event.type == "transcript.text.delta"]
    assert len(deltas) == 3  # one per chunk (no timestamp tokens: one segment per chunk)
    assert "".join(d for _, d in deltas) == reference
    done = arrivals[-1][1]
    assert done.text == reference
    assert done.usage.type == "duration" and done.usage.seconds == pytest.approx(86.12, abs=0.01)
    # The first delta came while later chunks were still being decoded.
    last_decoded = max(f.at for f in recorder.finished)
    assert len(recorder.finished) == 3 and deltas[0][0] < last_decoded
    assert sorted({f.result.batch_size for f in recorder.finished}) == [1]


async def test_deltas_keep_audio_order_when_chunks_finish_out_of_order(stack, client, long_story):
    reference = await sync_text(stack, long_story)
    recorder = ScriptedModelClient(stack, late={0: 1.0})  # chunk 0 comes back last
    events = await sse_stream(client, long_story)
    assert [f.index for f in recorder.finished][-1] == 0
    deltas = [e["delta"] for e in events if e["type"] == "transcript.text.delta"]
    assert len(deltas) == 3 and "".join(deltas) == reference
    assert deltas[0].startswith("Once upon a time")
    assert events[-1] == {
        "type": "transcript.text.done",
        "text": reference,
        "usage": {"type": "duration", "seconds": pytest.approx(86.12, abs=0.01)},
    }


async def test_verbose_json_stream_has_timed_segments_with_words(client, data_dir):
    hello = (data_dir / "hello.wav").read_bytes()
    events = await sse_stream(
        client,
        hello,
        response_format="verbose_json",
        **{"timestamp_granularities[]": ["word", "segment"]},
    )
    segments = [e for e in events if e["type"] == "transcript.text.segment"]
    deltas = [e["delta"] for e in events if e["type"] == "transcript.text.delta"]
    done = events[-1]
    assert done["type"] == "transcript.text.done" and "hello world" in done["text"].lower()
    assert segments and "".join(deltas) == done["text"]
    assert "".join(s["text"] for s in segments).strip() == done["text"]
    assert [s["id"] for s in segments] == [f"seg_{i}" for i in range(1, len(segments) + 1)]
    for segment in segments:
        assert 0 <= segment["start"] < segment["end"] <= 4.5
        assert segment["words"] and segment["start"] <= segment["words"][0]["start"]
    words = [w["word"].lower().strip(".,") for s in segments for w in s["words"]]
    assert words[:2] == ["hello", "world"]
    # json and text streams carry no segment events, as OpenAI's do not.
    plain = await sse_stream(client, hello, response_format="text")
    assert {e["type"] for e in plain} == {"transcript.text.delta", "transcript.text.done"}
    assert wer(done["text"], plain[-1]["text"]) == 0


async def test_bad_input_before_the_stream_is_the_usual_json_error(client, data_dir):
    hello = (data_dir / "hello.wav").read_bytes()

    async def post(audio: bytes, path: str = "/v1/audio/transcriptions", **data: Any):
        files = {"file": ("a.wav", audio)}
        return await client.post(path, files=files, data={"stream": "true", **data})

    assert_error(await post(b""), 400, "empty_file")
    assert_error(await post(b"<html>"), 415, "unsupported_media_type")
    assert_error(await post(hello, model="large-v9"), 400, "model_not_found")
    assert_error(await post(hello, response_format="srt"), 400, "bad_request")
    assert_error(await post(hello, "/v1/audio/translations"), 400, "bad_request")
    assert_error(await post(hello, stream="maybe"), 400, "bad_request")


async def test_failure_after_the_stream_started_ends_it_with_an_error_event(
    stack, client, story, data_dir
):
    ScriptedModelClient(stack, fail={1})  # chunk 1 fails once chunk 0 is out
    events = await sse_stream(client, story)
    assert [e["type"] for e in events] == ["transcript.text.delta", "error"]
    assert events[0]["delta"].startswith("Once upon a time")
    assert events[1]["error"]["type"] == "server_error"
    assert events[1]["error"]["code"] == "inference_failed"
    assert "injected" in events[1]["error"]["message"]
    # The official client raises on the error event instead of ending quietly.
    ScriptedModelClient(stack, fail={0})
    hello = (data_dir / "hello.wav").read_bytes()
    stream = await _openai(stack).audio.transcriptions.create(
        model="whisper-1", file=("hello.wav", hello), stream=True
    )
    with pytest.raises(openai.APIError, match="injected"):
        async for event in stream:
            raise AssertionError(f"no event comes before the error: {event}")
    # The service keeps serving.
    ScriptedModelClient(stack)
    events = await sse_stream(client, hello)
    assert events[-1]["type"] == "transcript.text.done" and "hello" in events[-1]["text"].lower()
