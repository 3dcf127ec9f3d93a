"""`/v1/realtime`: bad input and limits (error events, keys and session limits, timeouts,
disconnects), over a real socket, in-process."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from serve_app.security.keys import create_key
from tests.unit.conftest import LOOP
from tests.unit.live_support import ScriptedModelClient, serving
from tests.unit.realtime_client import fixture_pcm, manual, session

pytestmark = LOOP


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
