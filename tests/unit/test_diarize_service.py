"""Diarization end to end on the in-process stack: generated conversations, real models.

2- and 3-speaker conversations of distinct espeak-ng voices (turns of 3-4 s, some back to
back with < 0.3 s of silence) are generated once per module; DER is `tests.der` (checked
against a hand-worked example in test_diarize.py) with the usual 0.25 s collar.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from serve_app.jobs.runner import DIARIZATION, JobRunner
from serve_app.options import TranscribeOptions
from serve_app.pipeline.references import to_data_url
from serve_app.results import TranscriptionResult
from serve_app.stores import open_blob_store, open_job_store
from serve_app.stores.records import NewJob
from serve_app.testing import LocalStack
from tests.conversation import SENTENCES, Turn, conversation, speak, wav_bytes
from tests.der import der
from tests.unit.conftest import LOOP, assert_error, wait_job

pytestmark = LOOP

TWO = ("en-us", "en-us+f5")
THREE = ("en-us", "en-us+f5", "en+Michael")
# (voice, sentence) turns; the gaps before turns 2.. include back-to-back ones (< 0.3 s).
TWO_SCRIPT = [(0, 0), (1, 1), (0, 2), (1, 3), (0, 4), (1, 5)]
TWO_GAPS = [0.8, 0.2, 0.6, 0.25, 1.0]
THREE_SCRIPT = [(0, 0), (1, 1), (2, 2), (0, 3), (2, 4), (1, 5), (0, 6)]
THREE_GAPS = [0.7, 0.2, 0.5, 0.15, 0.9, 0.25]


@pytest.fixture(scope="module")
def two() -> tuple[bytes, list[Turn]]:
    audio, turns = conversation(TWO_SCRIPT, TWO_GAPS, TWO)
    return wav_bytes(audio), turns


@pytest.fixture(scope="module")
def three() -> tuple[bytes, list[Turn]]:
    audio, turns = conversation(THREE_SCRIPT, THREE_GAPS, THREE)
    return wav_bytes(audio), turns


def _der(body: dict, turns: list[Turn]) -> float:
    hypothesis = [(s["speaker"], s["start"], s["end"]) for s in body["segments"]]
    return der([(t.speaker, t.start, t.end) for t in turns], hypothesis, collar=0.25)


async def _diarize(client, audio: bytes, **data) -> dict:
    reply = await client.post(
        "/v1/audio/transcriptions",
        files={"file": ("talk.wav", audio)},
        data={"response_format": "diarized_json", **data},
    )
    assert reply.status_code == 200, reply.text
    return reply.json()


async def test_two_and_three_speakers_are_found_and_timed(client, two, three):
    for (audio, turns), voices in ((two, TWO), (three, THREE)):
        body = await _diarize(client, audio)
        assert body["task"] == "transcribe" and body["usage"]["type"] == "duration"
        assert {s["speaker"] for s in body["segments"]} == {"ABC"[i] for i in range(len(voices))}
        assert _der(body, turns) <= 0.10
        # Every turn's words went to one label, and each voice kept its label.
        labels = {}
        for turn in turns:
            inside = [
                s["speaker"]
                for s in body["segments"]
                if turn.start - 0.3 <= (s["start"] + s["end"]) / 2 <= turn.end + 0.3
            ]
            assert inside and len(set(inside)) == 1, (turn, inside)
            assert labels.setdefault(turn.speaker, inside[0]) == inside[0]


@pytest.mark.parametrize("voice", ["en-us+f5", "en-029+Andy"])
async def test_one_voice_is_one_speaker(client, voice):
    audio, _ = conversation([(0, 0), (0, 1), (0, 2)], [0.2, 0.6], (voice,))
    body = await _diarize(client, wav_bytes(audio))
    assert {s["speaker"] for s in body["segments"]} == {"A"}


async def test_speaker_counts_are_honoured(client, two):
    audio, _ = two
    forced = await _diarize(client, audio, num_speakers="3")
    assert len({s["speaker"] for s in forced["segments"]}) == 3
    capped = await _diarize(client, audio, max_speakers="1")
    assert {s["speaker"] for s in capped["segments"]} == {"A"}
    at_least = await _diarize(client, audio, min_speakers="2", max_speakers="4")
    assert len({s["speaker"] for s in at_least["segments"]}) == 2


async def test_known_speakers_get_their_names(client, two):
    audio, turns = two
    clips = [
        (
            "known_speaker_references[]",
            ("f.wav", wav_bytes(speak(TWO[1], SENTENCES[8])), "audio/wav"),
        ),
        (
            "known_speaker_references[]",
            ("m.wav", wav_bytes(speak(TWO[0], SENTENCES[9])), "audio/wav"),
        ),
    ]
    reply = await client.post(
        "/v1/audio/transcriptions",
        files=[("file", ("talk.wav", audio)), *clips],
        data={
            "response_format": "vtt",
            "diarize": "true",
            "known_speaker_names[]": ["Fiona", "Max"],
        },
    )
    assert reply.status_code == 200, reply.text
    cues = [line for line in reply.text.splitlines() if line.startswith("<v ")]
    names = {TWO[0]: "Max", TWO[1]: "Fiona"}
    assert [c.split(">")[0][3:] for c in cues] == [names[t.speaker] for t in turns]
    # verbose_json: speaker on segments and words.
    reply = await client.post(
        "/v1/audio/transcriptions",
        files=[("file", ("talk.wav", audio)), *clips],
        data={
            "response_format": "verbose_json",
            "diarize": "true",
            "known_speaker_names[]": ["Fiona", "Max"],
            "timestamp_granularities[]": ["word", "segment"],
        },
    )
    body = reply.json()
    assert body["segments"][0]["speaker"] == "Max" and body["words"][0]["speaker"] == "Max"
    assert {w["speaker"] for w in body["words"]} == {"Max", "Fiona"}


async def test_bad_diarization_input(client, two):
    audio, _ = two
    reply = await client.post(
        "/v1/audio/transcriptions",
        files={"file": ("talk.wav", audio)},
        data={"response_format": "text", "diarize": "true"},
    )
    assert_error(reply, 400, "bad_request")
    assert "diarized_json, verbose_json, srt, vtt" in reply.json()["error"]["message"]
    not_audio = ("known_speaker_references[]", ("x.txt", b"<html>hello</html>", "text/plain"))
    too_big = ("known_speaker_references[]", ("big.wav", b"RIFF" + bytes(3 * 1024 * 1024)))
    for clip, status in ((not_audio, 415), (too_big, 413)):
        reply = await client.post(
            "/v1/audio/transcriptions",
            files=[("file", ("talk.wav", audio)), clip],
            data={"response_format": "diarized_json", "known_speaker_names[]": "Ann"},
        )
        assert_error(reply, status)
    reply = await client.post(
        "/v1/audio/transcriptions",
        files={"file": ("talk.wav", audio)},
        data={"response_format": "verbose_json", "diarize": "true", "stream": "true"},
    )
    assert_error(reply, 400)


class _Crash(Exception):
    pass


async def test_a_restarted_job_redoes_neither_stage(idle_stack: LocalStack, two):
    stack = idle_stack  # tracker stopped: only these runners touch the job
    audio, _ = two
    options = TranscribeOptions(model="tiny.en", segment_timestamps=True, diarize=True)
    sha = hashlib.sha256(audio).hexdigest()
    assert stack.service.diarizer is not None
    client = stack.service.diarizer.client
    with (
        open_job_store(stack.config.storage.database_url) as store,
        open_blob_store(stack.config.storage.blob_url) as blobs,
    ):
        blobs.put(f"audio/{sha}", audio)
        job, _ = store.create_job(
            NewJob(
                tenant="default",
                model="tiny.en",
                options=options.model_dump(mode="json", exclude={"model"}),
                audio_key=f"audio/{sha}",
                audio_sha256=sha,
            )
        )

        class Crashing:
            async def embed(self, clips):
                raise _Crash  # the tracker dies once the transcription stage is done

        stack.service.diarizer.client = Crashing()
        first = JobRunner(stack.service, store, blobs, "first")
        try:
            with pytest.raises(_Crash):
                await first.run(job, lambda *_: None)
        finally:
            stack.service.diarizer.client = client
        total = store.get_job(job.id).total_chunks
        assert first.chunks_computed == total == len(store.load_checkpoints(job.id)) >= 1
        assert store.load_stages(job.id) == {}

        second = JobRunner(stack.service, store, blobs, "second")
        key = await second.run(job, lambda *_: None)
        assert second.chunks_computed == 0 and second.stages_computed == {DIARIZATION: 1}
        assert len(store.load_checkpoints(job.id)) == total  # no chunk decoded again
        result = TranscriptionResult.from_json(blobs.get(key))
        assert {s.speaker for s in result.segments} == {"A", "B"}

        third = JobRunner(stack.service, store, blobs, "third")
        await third.run(job, lambda *_: None)
        assert third.chunks_computed == 0 and third.stages_computed == {}
        assert TranscriptionResult.from_json(blobs.get(key)).segments == result.segments
        windows = store.load_stages(job.id)[DIARIZATION]
        assert np.array(windows["embeddings"]).shape[1] == 256


async def test_a_job_carries_the_speaker_options(client, two):
    audio, turns = two
    refs = [to_data_url(wav_bytes(speak(v, SENTENCES[9]))) for v in TWO]
    reply = await client.post(
        "/v1/jobs",
        files={"file": ("talk.wav", audio)},
        data={
            "diarize": "true",
            "known_speaker_names[]": ["Max", "Fiona"],
            "known_speaker_references[]": refs,
        },
    )
    assert reply.status_code == 202, reply.text
    job = await wait_job(client, reply.json()["id"])
    assert job["status"] == "succeeded", job
    result = await client.get(f"/v1/jobs/{job['id']}/result", params={"format": "diarized_json"})
    speakers = [s["speaker"] for s in result.json()["segments"]]
    assert speakers == [{TWO[0]: "Max", TWO[1]: "Fiona"}[t.speaker] for t in turns]
    bad = await client.post(
        "/v1/jobs",
        files={"file": ("talk.wav", audio)},
        data={
            "diarize": "true",
            "known_speaker_names[]": "Max",
            "known_speaker_references[]": "data:text/html;base64,PGI+",
        },
    )
    assert_error(bad, 415)
