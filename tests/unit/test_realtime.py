"""`/v1/realtime`: OpenAI's realtime transcription protocol, over a real socket, in-process.

The stack's FastAPI app is served by uvicorn in the test's event loop (the replica's batcher
lives there); clients are the `websockets` library and the official `openai` client.
"""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import openai
from websockets.asyncio.client import connect

from serve_app.http.app import build_http_app
from serve_app.options import LIVE_PRIORITY
from tests.text import wer
from tests.unit.conftest import LOOP
from tests.unit.live_support import (
    ScriptedModelClient,
    serving,
    sync_text,
    wav_bytes,
)
from tests.unit.realtime_client import Client, Observed, fixture_pcm, manual, session

pytestmark = LOOP


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
