"""`/v1/realtime`: OpenAI's realtime transcription protocol, over a real socket, in-process.

The stack's FastAPI app is served by uvicorn in the test's event loop (the replica's batcher
lives there); clients are the `websockets` library and the official `openai` client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from serve_app.config import AppConfig
from serve_app.http.app import build_http_app
from serve_app.inference.replica import ModelReplica
from serve_app.options import LIVE_PRIORITY
from serve_app.pipeline.decode import decode_audio
from serve_app.security.keys import create_key
from serve_app.testing import LocalStack
from tests.text import wer
from tests.unit.conftest import LOOP, stack_config
from tests.unit.live_support import (
    ScriptedModelClient,
    pcm16,
    read_pcm,
    say,
    serving,
    sync_text,
    wav_bytes,
)

pytestmark = LOOP


class Client:
    """A realtime client on a raw WebSocket: JSON events in and out."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, **event: Any) -> None:
        await self.ws.send(json.dumps(event))

    async def append(self, pcm: np.ndarray) -> None:
        audio = base64.b64encode(pcm.astype("<i2").tobytes()).decode()
        await self.send(type="input_audio_buffer.append", audio=audio)

    async def recv(self, timeout: float = 30) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def until(self, kind: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Events up to and including the first of type `kind`."""
        events = [await self.recv(timeout)]
        while events[-1]["type"] != kind:
            events.append(await self.recv(timeout))
        return events

    async def error(self) -> dict[str, Any]:
        event = await self.recv(10)
        assert event["type"] == "error", event
        return event["error"]


@asynccontextmanager
async def session(url: str, key: str | None = None, query: str = "") -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with connect(f"{url}/v1/realtime{query}", additional_headers=headers) as ws:
        client = Client(ws)
        created = await client.recv()
        assert created["type"] == "session.created", created
        yield client


def manual(rate: int = 16000, **transcription: Any) -> dict[str, Any]:
    """A session.update for manual commits at `rate`."""
    audio_input: dict[str, Any] = {
        "format": {"type": "audio/pcm", "rate": rate},
        "turn_detection": None,
    }
    if transcription:
        audio_input["transcription"] = transcription
    return {"type": "transcription", "audio": {"input": audio_input}}


def fixture_pcm(path: Path) -> np.ndarray:
    """A test fixture as 16 kHz PCM16 (what the file decoder sees, sample for sample)."""
    return pcm16(decode_audio(path.read_bytes(), max_duration_s=60, timeout_s=30).samples)


class Observed:
    """A LiveObserver that keeps what it was told."""

    def __init__(self) -> None:
        self.open: list[int] = []
        self.utterances: list[tuple[str, str, float]] = []

    def sessions_open(self, count: int) -> None:
        self.open.append(count)

    def utterance_done(self, model: str, outcome: str, seconds: float) -> None:
        self.utterances.append((model, outcome, seconds))


@pytest_asyncio.fixture(loop_scope="session")
async def url(stack: LocalStack) -> AsyncIterator[str]:
    async with serving(stack.app) as served:
        yield served


@pytest_asyncio.fixture(loop_scope="session")
async def make_stack(tmp_path: Path, replica: ModelReplica) -> AsyncIterator[Callable[..., Any]]:
    """Stacks with other settings (auth, realtime limits), on the shared replica."""
    opened: list[LocalStack] = []

    async def make(**sections: Any) -> LocalStack:
        base = stack_config(tmp_path / str(len(opened))).model_dump()
        config = AppConfig.model_validate({**base, **sections})
        entered = await LocalStack(config, replicas={"tiny.en": replica}).__aenter__()
        opened.append(entered)
        return entered

    yield make
    for entered in opened:
        await entered.__aexit__(None, None, None)


# ---- the protocol --------------------------------------------------------------------------


async def test_session_created_and_updated_in_both_protocol_versions(url):
    async with connect(f"{url}/v1/realtime?model=whisper-1") as ws:
        client = Client(ws)
        created = await client.recv()
        assert created["type"] == "session.created" and created["event_id"].startswith("event_")
        session_view = created["session"]
        assert session_view["type"] == "transcription" and session_view["id"].startswith("sess_")
        audio_input = session_view["audio"]["input"]
        assert audio_input["format"] == {"type": "audio/pcm", "rate": 24000}
        assert audio_input["transcription"]["model"] == "whisper-1"
        assert audio_input["turn_detection"] == {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
        }
        update = {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 16000},
                    "transcription": {"model": "tiny.en", "language": "en", "prompt": "Hi."},
                    "turn_detection": {"type": "server_vad", "threshold": 0.6},
                    "noise_reduction": {"type": "near_field"},  # accepted, not applied
                }
            },
            "include": ["item.input_audio_transcription.logprobs"],
        }
        await client.send(type="session.update", event_id="u1", session=update)
        updated = (await client.recv())["session"]["audio"]["input"]
        assert updated["format"]["rate"] == 16000
        assert updated["transcription"] == {"model": "tiny.en", "language": "en", "prompt": "Hi."}
        assert updated["turn_detection"]["threshold"] == 0.6
        assert updated["turn_detection"]["silence_duration_ms"] == 500  # kept
        # Only the fields present change; a null turn_detection means manual commits.
        partial = {"type": "transcription", "audio": {"input": {"turn_detection": None}}}
        await client.send(type="session.update", session=partial)
        event = await client.recv()
        assert event["type"] == "session.updated"
        assert event["session"]["audio"]["input"]["turn_detection"] is None
        assert event["session"]["audio"]["input"]["format"]["rate"] == 16000
        legacy = {
            "input_audio_format": "pcm16",
            "input_audio_transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
        }
        await client.send(type="transcription_session.update", session=legacy)
        event = await client.recv()
        assert event["type"] == "transcription_session.updated"
        assert event["session"]["input_audio_format"] == "pcm16"
        assert event["session"]["input_audio_transcription"]["model"] == "whisper-1"
        assert event["session"]["turn_detection"]["silence_duration_ms"] == 300


async def test_sessions_set_decode_knobs_and_a_bad_one_changes_nothing(stack, data_dir):
    recorder = ScriptedModelClient(stack)
    app = build_http_app(stack.service, stack.jobs)
    async with serving(app) as served, session(served) as client:
        knobs = {"beam_size": 2, "hotwords": "Zorblax", "temperature": 0.2, "foo": 1}
        await client.send(type="session.update", session=manual(16000, **knobs))
        shown = (await client.until("session.updated"))[-1]["session"]["audio"]["input"]
        assert shown["transcription"] == {
            "model": "tiny.en", "language": None, "prompt": None,
            "beam_size": 2, "hotwords": "Zorblax", "temperature": 0.2,
        }  # fmt: skip
        # A later update of the language keeps the knobs; a bad knob is refused whole.
        await client.send(type="session.update", session=manual(16000, language="en"))
        await client.until("session.updated")
        bad = manual(16000, beam_size=99, language="de")
        await client.send(type="session.update", event_id="bad", session=bad)
        error = await client.error()
        assert error["event_id"] == "bad" and "beam_size" in error["message"]
        await client.append(fixture_pcm(data_dir / "hello.wav"))
        await client.send(type="input_audio_buffer.commit")
        done = await client.until("conversation.item.input_audio_transcription.completed")
    assert "hello" in done[-1]["transcript"].lower()
    options = recorder.finished[0].request.options
    assert (options.beam_size, options.temperature, options.language) == (2, 0.2, "en")
    assert options.hotwords == "Zorblax"


async def test_manual_commits_match_sync_results_in_commit_order(stack, data_dir):
    hello, weather = data_dir / "hello.wav", data_dir / "weather.wav"
    references = [await sync_text(stack, p.read_bytes()) for p in (hello, weather)]
    # The first turn (hello, 4.4 s) is held back, so the second (3.5 s) finishes first.
    recorder = ScriptedModelClient(stack, delay_for=lambda chunk: float(chunk.duration > 4))
    observed = Observed()
    app = build_http_app(stack.service, stack.jobs, live=observed)
    async with serving(app) as served, session(served) as client:
        await client.send(type="session.update", session=manual(16000))
        await client.until("session.updated")
        for path in (hello, weather):
            pcm = fixture_pcm(path)
            for start in range(0, pcm.size, 3200):
                await client.append(pcm[start : start + 3200])
            await client.send(type="input_audio_buffer.commit", event_id=f"c-{path.stem}")
        events = await client.until("conversation.item.input_audio_transcription.completed")
        events += await client.until("conversation.item.input_audio_transcription.completed")
        # clear, then an empty commit: an error, and the session goes on
        await client.append(fixture_pcm(hello)[:8000])
        await client.send(type="input_audio_buffer.clear")
        assert (await client.recv())["type"] == "input_audio_buffer.cleared"
        await client.send(type="input_audio_buffer.commit", event_id="empty")
        error = await client.error()
        assert error["code"] == "input_audio_buffer_commit_empty" and error["event_id"] == "empty"
    committed = [e for e in events if e["type"] == "input_audio_buffer.committed"]
    first, second = (e["item_id"] for e in committed)
    assert committed[0]["previous_item_id"] is None and committed[1]["previous_item_id"] == first
    done = [e for e in events if e["type"].endswith(".completed")]
    assert [e["item_id"] for e in done] == [first, second]  # commit order, not finish order
    assert recorder.finished[0].request.duration < 4.0  # weather (3.5 s) came back first
    # (Turns of one tenant queued together may share a window: the words match, WER ≤ 0.02.)
    assert all(wer(r, e["transcript"]) <= 0.02 for r, e in zip(references, done, strict=True))
    for item, event in zip((first, second), done, strict=True):
        deltas = [
            e["delta"] for e in events if e["type"].endswith(".delta") and e["item_id"] == item
        ]
        assert "".join(deltas) == event["transcript"]
        assert event["usage"]["type"] == "duration" and 3 < event["usage"]["seconds"] < 5
    assert {f.request.priority for f in recorder.finished} == {LIVE_PRIORITY}
    await asyncio.sleep(0.1)
    assert observed.open[0] == 1 and observed.open[-1] == 0
    assert [(m, o) for m, o, _ in observed.utterances] == [("tiny.en", "completed")] * 2
    assert all(0 < seconds < 30 for _, _, seconds in observed.utterances)


async def test_the_openai_client_connects_to_the_service(url, data_dir, stack):
    reference = await sync_text(stack, (data_dir / "train.wav").read_bytes())
    pcm = fixture_pcm(data_dir / "train.wav")
    ai = openai.AsyncOpenAI(base_url=url.replace("ws:", "http:") + "/v1", api_key="x")
    async with ai.realtime.connect(model="whisper-1") as connection:
        await connection.session.update(session=manual(16000, model="whisper-1"))
        for start in range(0, pcm.size, 8000):
            chunk = base64.b64encode(pcm[start : start + 8000].tobytes()).decode()
            await connection.input_audio_buffer.append(audio=chunk)
        await connection.input_audio_buffer.commit()
        seen = []
        async for event in connection:
            seen.append(event.type)
            if event.type == "conversation.item.input_audio_transcription.completed":
                transcript = event.transcript
                break
    assert seen[:3] == ["session.created", "session.updated", "input_audio_buffer.committed"]
    assert transcript == reference
    await ai.close()


# ---- bad input and limits ------------------------------------------------------------------


async def test_bad_messages_get_error_events_and_the_session_goes_on(url, data_dir):
    async with session(url) as client:
        await client.ws.send("this is not json")
        assert (await client.error())["code"] == "invalid_event"
        await client.ws.send("[1, 2]")
        assert (await client.error())["code"] == "invalid_event"
        await client.send(type="response.create", event_id="r1")
        error = await client.error()
        assert error["code"] == "unknown_event" and error["event_id"] == "r1"
        assert error["type"] == "invalid_request_error"
        await client.ws.send(b"\x00\x01")  # binary frames are not events
        assert (await client.error())["code"] == "invalid_event"
        big = "A" * (1024 * 1024 + 8)  # over realtime.max_message_bytes (1 MiB)
        await client.send(type="input_audio_buffer.append", event_id="big", audio=big)
        assert (await client.error())["code"] == "payload_too_large"
        await client.send(type="input_audio_buffer.append", event_id="b64", audio="%%%")
        error = await client.error()
        assert error["code"] == "invalid_event" and "base64" in error["message"]
        await client.send(type="input_audio_buffer.append", audio=base64.b64encode(b"abc").decode())
        assert "2-byte" in (await client.error())["message"]
        await client.send(type="input_audio_buffer.append")  # no audio field
        assert "audio" in (await client.error())["message"]
        for audio_format in ({"type": "audio/pcm", "rate": 44100}, {"type": "audio/pcmu"}):
            update = {"type": "transcription", "audio": {"input": {"format": audio_format}}}
            await client.send(type="session.update", event_id="fmt", session=update)
            error = await client.error()
            assert error["code"] == "unsupported_audio_format" and error["event_id"] == "fmt"
        await client.send(
            type="transcription_session.update", session={"input_audio_format": "g711_ulaw"}
        )
        assert (await client.error())["code"] == "unsupported_audio_format"
        for bad_input in (
            {"transcription": {"model": "gpt-4o-transcribe"}},
            {"transcription": {"language": "xx"}},
            {"turn_detection": {"type": "semantic_vad"}},
            {"turn_detection": {"type": "server_vad", "threshold": 7}},
        ):
            update = {"type": "transcription", "audio": {"input": bad_input}}
            await client.send(type="session.update", session=update)
            assert (await client.recv())["type"] == "error", bad_input
        await client.send(type="session.update", session={"type": "realtime"})
        assert "transcription" in (await client.error())["message"]
        # None of it changed the session, and it still transcribes.
        await client.send(type="session.update", session=manual(16000))
        view = (await client.recv())["session"]["audio"]["input"]
        assert (
            view["transcription"]["model"] == "tiny.en"
            and view["transcription"]["language"] is None
        )
        await client.append(fixture_pcm(data_dir / "hello.wav"))
        await client.send(type="input_audio_buffer.commit")
        done = (await client.until("conversation.item.input_audio_transcription.completed"))[-1]
        assert "hello" in done["transcript"].lower()


async def test_handshake_needs_a_key_and_sessions_are_limited_per_key(make_stack, data_dir):
    stack = await make_stack(auth={"enabled": True}, realtime={"max_sessions_per_key": 2})
    assert stack.jobs is not None
    alice, _ = create_key(stack.jobs.store, "alice", "a")
    bob, _ = create_key(stack.jobs.store, "bob", "b")
    async with serving(stack.app) as served:
        for key in (None, "ws_not-a-key"):
            with pytest.raises(InvalidStatus) as refused:
                async with session(served, key):
                    pass
            assert refused.value.response.status_code == 401
            assert json.loads(refused.value.response.body)["error"]["code"] == "unauthorized"
        async with session(served, alice), session(served, alice) as second:
            async with connect(
                f"{served}/v1/realtime", additional_headers={"Authorization": f"Bearer {alice}"}
            ) as third:
                event = json.loads(await third.recv())
                assert event["type"] == "error" and event["error"]["code"] == "rate_limited"
                with pytest.raises(ConnectionClosed) as closed:
                    await third.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            async with session(served, bob) as other:  # another key is not affected
                await other.send(type="session.update", session=manual(16000))
                assert (await other.recv())["type"] == "session.updated"
            await second.send(type="session.update", session=manual(16000))
            assert (await second.recv())["type"] == "session.updated"
        async with session(served, alice) as again:  # slots come back when sessions end
            await again.send(type="session.update", session=manual(16000))
            await again.append(fixture_pcm(data_dir / "hello.wav"))
            await again.send(type="input_audio_buffer.commit")
            done = await again.until("conversation.item.input_audio_transcription.completed")
            assert "hello" in done[-1]["transcript"].lower()
    async with stack.http({"Authorization": f"Bearer {bob}"}) as http:  # HTTP goes on too
        files = {"file": ("a.wav", (data_dir / "hello.wav").read_bytes())}
        response = await http.post("/v1/audio/transcriptions", files=files)
    assert response.status_code == 200 and "hello" in response.json()["text"].lower()


async def test_idle_sessions_and_long_sessions_are_closed(make_stack):
    stack = await make_stack(realtime={"idle_timeout_s": 0.5, "max_session_s": 1.5})
    async with serving(stack.app) as served:
        async with session(served) as idle:
            error = await idle.error()
            assert error["code"] == "session_timeout" and "no client event" in error["message"]
            with pytest.raises(ConnectionClosed) as closed:
                await idle.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        async with session(served) as busy:
            silence = np.zeros(2400, dtype="<i2")
            with contextlib.suppress(ConnectionClosed):
                for _ in range(40):  # 4 s of 100 ms appends: the 1.5 s limit comes first
                    await busy.append(silence)
                    await asyncio.sleep(0.1)
            error = await busy.error()  # sent before the close
            assert error["code"] == "session_timeout" and "reached" in error["message"]


async def test_a_disconnect_cancels_the_sessions_queued_turns(stack, url, data_dir):
    recorder = ScriptedModelClient(stack, hold=5.0)  # a long queue: the turn is still waiting
    async with session(url) as client:
        await client.send(type="session.update", session=manual(16000))
        await client.until("session.updated")
        await client.append(fixture_pcm(data_dir / "hello.wav"))
        await client.send(type="input_audio_buffer.commit")
        assert (await client.recv())["type"] == "input_audio_buffer.committed"
        while not recorder.started:  # the turn's chunk is queued
            await asyncio.sleep(0.01)
    for _ in range(100):
        if recorder.cancelled:
            break
        await asyncio.sleep(0.02)
    assert recorder.cancelled == 1 and not recorder.finished
    assert stack.replicas["tiny.en"].batcher.queued == 0


# ---- many sessions at once -----------------------------------------------------------------

SPEAKERS = [
    ("en-us", "The meeting has been moved to Thursday afternoon."),
    ("en-gb", "Please remember to water the plants before you leave."),
    ("en-us+f3", "Our flight was delayed by two hours this morning."),
    ("en-us+m3", "The library will be closed on Monday for the holiday."),
    ("en-gb+f2", "He ordered a large coffee with milk for breakfast."),
    ("en-us+f4", "The new software update fixes several bugs."),
    ("en-gb+m3", "We need three volunteers to set up the chairs."),
    ("en-us+f2", "The river flooded after a week of heavy rain."),
]


@pytest.mark.slow
async def test_eight_concurrent_sessions_share_batches_and_match_sync(make_stack, tmp_path_factory):
    stack = await make_stack(auth={"enabled": True})
    assert stack.jobs is not None
    voices = tmp_path_factory.mktemp("voices")
    clips = [say(voices, f"s{i}", text, voice) for i, (voice, text) in enumerate(SPEAKERS)]
    keys = [create_key(stack.jobs.store, f"tenant-{i}", "live")[0] for i in range(len(clips))]
    # The sync results come from other tenants, so they never share a window with a live turn.
    sync_keys = [create_key(stack.jobs.store, f"sync-{i}", "sync")[0] for i in range(len(clips))]
    recorder = ScriptedModelClient(stack)
    rate = 24000

    def stream_of(clip: Path) -> np.ndarray:
        """What a session says: 0.2 s of silence, the sentence, 1.5 s of silence."""
        pcm, clip_rate = read_pcm(clip)
        assert clip_rate == rate
        return np.concatenate([np.zeros(rate // 5, "<i2"), pcm, np.zeros(rate * 3 // 2, "<i2")])

    async def speak(key: str, audio: np.ndarray) -> list[dict[str, Any]]:
        async with session(served, key) as client:
            # server VAD with the defaults, 100 ms appends at 1x real time
            loop = asyncio.get_running_loop()
            started = loop.time()
            step = rate // 10
            for n, start in enumerate(range(0, audio.size, step)):
                await client.append(audio[start : start + step])
                await asyncio.sleep(max(0.0, started + (n + 1) * 0.1 - loop.time()))
            return await client.until("conversation.item.input_audio_transcription.completed")

    streams = [stream_of(clip) for clip in clips]
    # The sync result of the same audio (the turn begins within the 300 ms prefix padding, so
    # the live turn and the file give the VAD chunker the same samples), decoded while the
    # sessions speak (the model is idle until their turns end).
    references = asyncio.gather(
        *(sync_text(stack, wav_bytes(a, rate), k) for k, a in zip(sync_keys, streams, strict=True))
    )
    async with serving(stack.app) as served:
        results = await asyncio.gather(*(speak(k, a) for k, a in zip(keys, streams, strict=True)))
    for events, reference in zip(results, await references, strict=True):
        kinds = [e["type"] for e in events]
        assert kinds[:3] == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
        ], kinds
        assert wer(reference, events[-1]["transcript"]) <= 0.02, (reference, events[-1])
    # Turns of different sessions (tenants) were decoded in one batch.
    live = [f for f in recorder.finished if f.request.priority == LIVE_PRIORITY]
    assert sorted(f.request.tenant for f in live) == sorted(f"tenant-{i}" for i in range(8))
    batches: dict[tuple[float, int], set[str]] = {}  # chunks of one batch share its run time
    for finished in live:
        key = (finished.result.batch_s, finished.result.batch_size)
        batches.setdefault(key, set()).add(finished.request.tenant)
    assert max(len(tenants) for tenants in batches.values()) >= 2, batches


# ---- the command line ----------------------------------------------------------------------


async def test_cli_live_prints_each_turn_as_it_is_transcribed(
    url, data_dir, tmp_path, capsys, reference_texts
):
    from serve_app.client.cli import main

    silence = np.zeros(16000, dtype="<i2")
    talk = [fixture_pcm(data_dir / name) for name in ("hello.wav", "weather.wav")]
    path = tmp_path / "two-turns.wav"
    path.write_bytes(wav_bytes(np.concatenate([silence, talk[0], silence, talk[1]]), 16000))
    base = url.replace("ws:", "http:")
    code = await asyncio.to_thread(main, ["live", str(path), "--url", base, "--speed", "0"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 2, out
    for line, name in zip(lines, ("hello.wav", "weather.wav"), strict=True):
        assert wer(reference_texts[name], line) < 0.2, line
    missing = await asyncio.to_thread(main, ["live", str(tmp_path / "nope.wav"), "--url", base])
    assert missing == 2
    refused = await asyncio.to_thread(
        main, ["--url", base, "live", str(path), "--model", "gpt-4o-transcribe"]
    )
    assert refused == 2 and "refused" in capsys.readouterr().err
