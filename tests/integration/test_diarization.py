"""Diarization and multichannel on the deployed app (the session's, with its SpeakerEmbedder).

The in-process acceptance checks (2/3 speakers, counts, names, bad input, stage restart)
are in tests/unit/test_diarize_service.py; here the same paths run across Ray: the
SpeakerEmbedder deployment, a stereo file against faster-whisper per channel, and a job
whose tracker is killed once its transcription stage is done.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from serve_app.pipeline.references import to_data_url
from tests.conversation import SENTENCES, conversation, speak, wav_bytes
from tests.der import der
from tests.integration.conftest import wait_job

pytestmark = pytest.mark.integration

VOICES = ("en-us", "en-us+f5", "en+Michael")
SCRIPT = [(0, 0), (1, 1), (2, 2), (0, 3), (2, 4), (1, 5), (0, 6)]
GAPS = [0.7, 0.2, 0.5, 0.15, 0.9, 0.25]


@pytest.fixture(scope="module")
def talk():
    audio, turns = conversation(SCRIPT, GAPS, VOICES)
    return audio, turns


def test_three_speakers_through_the_speaker_embedder(whisper_app, http, talk):
    from ray import serve

    audio, turns = talk
    reply = http.post(
        "/v1/audio/transcriptions",
        files={"file": ("talk.wav", wav_bytes(audio))},
        data={"response_format": "diarized_json"},
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert {s["speaker"] for s in body["segments"]} == {"A", "B", "C"}
    hypothesis = [(s["speaker"], s["start"], s["end"]) for s in body["segments"]]
    assert der([(t.speaker, t.start, t.end) for t in turns], hypothesis, collar=0.25) <= 0.10
    deployments = serve.status().applications[whisper_app.name].deployments
    assert deployments["SpeakerEmbedder"].status == "HEALTHY"
    # Known speakers as data URLs (OpenAI's JSON form), on the handle too.
    refs = [to_data_url(wav_bytes(speak(v, SENTENCES[9])), "audio/wav") for v in VOICES[:2]]
    result = whisper_app.handle.transcribe.remote(
        wav_bytes(audio),
        diarize=True,
        known_speaker_names=["Uma", "Fay"],
        known_speaker_references=refs,
    ).result()
    by_turn = [
        {s.speaker for s in result.segments if t.start <= (s.start + s.end) / 2 <= t.end}
        for t in turns
    ]
    names = {VOICES[0]: "Uma", VOICES[1]: "Fay", VOICES[2]: "A"}
    assert by_turn == [{names[t.speaker]} for t in turns]


def test_stereo_channels_match_faster_whisper_alone(http, direct_pipelines, tmp_path):
    from faster_whisper.audio import decode_audio

    left = np.concatenate(
        [speak("en-us", SENTENCES[0]), np.zeros(32000), speak("en-us", SENTENCES[2])]
    )
    right = np.concatenate(
        [np.zeros(40000), speak("en-us+f5", SENTENCES[1]), speak("en-us+f5", SENTENCES[3])]
    )
    n = max(left.size, right.size)
    stereo = np.stack([np.pad(left, (0, n - left.size)), np.pad(right, (0, n - right.size))], 1)
    reply = http.post(
        "/v1/audio/transcriptions",
        files={"file": ("call.wav", wav_bytes(stereo.astype(np.float32)))},
        data={"response_format": "verbose_json", "multichannel": "true", "model": "tiny.en"},
    )
    assert reply.status_code == 200, reply.text
    segments = reply.json()["segments"]
    assert [s["start"] for s in segments] == sorted(s["start"] for s in segments)
    for channel in (0, 1):
        path = tmp_path / f"channel{channel}.wav"
        path.write_bytes(wav_bytes(stereo[:, channel].astype(np.float32)))
        direct, _ = direct_pipelines["tiny.en"].transcribe(
            decode_audio(str(path)), language="en", batch_size=8, without_timestamps=False
        )
        expected = "".join(s.text for s in direct).strip()
        got = "".join(s["text"] for s in segments if s["channel"] == channel).strip()
        assert got == expected
    too_many = np.stack([stereo[:, 0]] * 9, 1).astype(np.float32)
    reply = http.post(
        "/v1/audio/transcriptions",
        files={"file": ("nine.wav", wav_bytes(too_many))},
        data={"response_format": "verbose_json", "multichannel": "true"},
    )
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "too_many_channels"


def test_a_diarized_job_survives_a_tracker_kill_after_transcription(whisper_app, http, talk):
    import ray

    from serve_app.stores import open_job_store

    audio, _ = talk
    long = np.concatenate([audio] * 3)  # several chunks, and a diarization that takes a while
    reply = http.post(
        "/v1/jobs",
        files={"file": ("talk.wav", wav_bytes(long))},
        data={"diarize": "true", "model": "tiny.en"},
    )
    assert reply.status_code == 202, reply.text
    job_id = reply.json()["id"]
    config = whisper_app.config
    tracker = ray.get_actor(config.jobs.tracker_name, namespace=config.jobs.namespace)
    old_worker = ray.get(tracker.ping.remote())
    with open_job_store(config.storage.database_url) as store:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            job = store.get_job(job_id)
            if job.total_chunks and job.done_chunks == job.total_chunks:
                break
            time.sleep(0.05)
        # Killed between the stages: every chunk checkpointed, diarization not yet.
        assert store.get_job(job_id).status.value == "running" and not store.load_stages(job_id)
        ray.kill(tracker, no_restart=False)  # Ray restarts it; the lease expires
        done = wait_job(http, job_id, timeout=240)
        assert done["status"] == "succeeded", done
        checkpoints = store.load_checkpoints(job_id)
        stages = store.load_stages(job_id)
    assert len(checkpoints) == done["total_chunks"] >= 3
    assert {c.computed_by for c in checkpoints} == {old_worker}  # no chunk decoded again
    assert list(stages) == ["diarization"]
    stats = ray.get(
        ray.get_actor(config.jobs.tracker_name, namespace=config.jobs.namespace).stats.remote()
    )
    assert stats.worker_id != old_worker and stats.chunks_computed == 0
    result = http.get(f"/v1/jobs/{job_id}/result", params={"format": "diarized_json"}).json()
    assert {s["speaker"] for s in result["segments"]} == {"A", "B", "C"}
