"""The job API through HTTP, in-process: JobsFrontend, a real JobTracker and SQLite + folder.

Tests that need a job to stay queued use `idle_stack` (the tracker is stopped, so nothing
leases the job) and restart the tracker with `tracker.start()` when the job should run.
"""

from __future__ import annotations

import asyncio
import uuid

from serve_app.jobs.frontend import upload_key
from serve_app.jobs.runner import job_options
from serve_app.options import TranscribeOptions
from tests.text import wer
from tests.unit.conftest import LOOP, assert_error, wait_job
from tests.unit.job_support import submit

pytestmark = LOOP

JOB_VIEW_KEYS = {
    "id",
    "object",
    "status",
    "model",
    "priority",
    "progress",
    "done_chunks",
    "total_chunks",
    "attempts",
    "error",
    "options",
    "metadata",
    "created_at",
    "started_at",
    "finished_at",
    "result_available",
}


# ---- the happy path ------------------------------------------------------------------------


async def test_submit_poll_and_fetch_results(client, data_dir, reference_texts):
    response = await submit(client, data_dir / "hello.wav", word_timestamps="true")
    assert response.status_code == 202, response.text
    job = response.json()
    assert set(job) == JOB_VIEW_KEYS
    assert job["object"] == "job" and job["model"] == "tiny.en"
    assert job["status"] in {"queued", "running"} and not job["result_available"]
    assert job["options"]["word_timestamps"] is True
    # The row was committed before the 202.
    assert (await client.get(f"/v1/jobs/{job['id']}")).status_code == 200

    done = await wait_job(client, job["id"])
    assert done["status"] == "succeeded", done
    assert done["progress"] == 1.0 and done["done_chunks"] == done["total_chunks"] == 1
    assert done["attempts"] == 1 and done["error"] is None and done["result_available"]
    assert done["started_at"] and done["finished_at"]

    result = await client.get(f"/v1/jobs/{job['id']}/result")
    assert result.status_code == 200, result.text
    text = result.json()["text"]
    assert set(result.json()) == {"text", "usage"}
    assert wer(reference_texts["hello.wav"], text) < 0.2, text

    verbose = (await client.get(f"/v1/jobs/{job['id']}/result?format=verbose_json")).json()
    assert verbose["text"] == text and verbose["language"] == "en"
    assert verbose["segments"] and verbose["words"]  # the job asked for word timestamps
    assert "".join(w["word"] for w in verbose["words"]) == text.replace(" ", "")

    srt = await client.get(f"/v1/jobs/{job['id']}/result", params={"format": "srt"})
    assert srt.status_code == 200 and srt.headers["content-type"].startswith("application/x-subrip")
    assert srt.text.startswith("1\n00:00:") and "-->" in srt.text
    plain = await client.get(f"/v1/jobs/{job['id']}/result", params={"format": "text"})
    assert plain.text.strip() == text
    vtt = await client.get(f"/v1/jobs/{job['id']}/result", params={"format": "vtt"})
    assert vtt.text.startswith("WEBVTT")
    assert_error(await client.get(f"/v1/jobs/{job['id']}/result", params={"format": "docx"}), 400)


async def test_job_result_matches_the_sync_transcription(client, data_dir):
    # One after the other: run together, the two clips would share a packed window.
    job = (await submit(client, data_dir / "train.wav")).json()
    assert (await wait_job(client, job["id"]))["status"] == "succeeded"
    sync = await client.post(
        "/v1/audio/transcriptions",
        files={"file": ("train.wav", (data_dir / "train.wav").read_bytes())},
        data={"response_format": "verbose_json"},
    )
    result = (await client.get(f"/v1/jobs/{job['id']}/result?format=verbose_json")).json()
    assert result["text"] == sync.json()["text"]
    assert [(s["start"], s["end"]) for s in result["segments"]] == [
        (s["start"], s["end"]) for s in sync.json()["segments"]
    ]


async def test_stored_options_round_trip(stack, client, data_dir):
    response = await submit(
        client,
        data_dir / "numbers.wav",
        model="whisper-1",
        language=" EN ",
        prompt="",
        temperature="0.2",
        beam_size="3",
        word_timestamps="true",
        pack="false",
        priority="7",
        metadata='{"customer": "c-1", "n": [1, 2]}',
    )
    assert response.status_code == 202, response.text
    view = response.json()
    assert view["priority"] == 7 and view["metadata"] == {"customer": "c-1", "n": [1, 2]}
    row = await asyncio.to_thread(stack.jobs.store.get_job, view["id"])
    assert row.model == "tiny.en"  # the alias resolves to the canonical name
    assert set(row.options) == set(TranscribeOptions.model_fields) - {"model"}
    assert view["options"] == row.options
    expected = TranscribeOptions(
        model="tiny.en",
        language="en",
        temperature=0.2,
        beam_size=3,
        word_timestamps=True,
        segment_timestamps=True,  # jobs always keep timestamps, for srt/vtt results
        pack=False,
    )
    assert job_options(row) == expected
    assert TranscribeOptions.model_validate({**row.options, "model": row.model}) == expected
    done = await wait_job(client, view["id"])
    assert done["status"] == "succeeded" and done["options"] == row.options


async def test_json_job_from_an_upload(stack, client, data_dir):
    upload_id = uuid.uuid4().hex
    audio = (data_dir / "train.wav").read_bytes()
    await asyncio.to_thread(stack.jobs.blobs.put, upload_key("default", upload_id), audio)
    response = await client.post(
        "/v1/jobs", json={"upload_id": upload_id, "model": "tiny.en", "metadata": {"a": 1}}
    )
    assert response.status_code == 202, response.text
    done = await wait_job(client, response.json()["id"])
    assert done["status"] == "succeeded" and done["metadata"] == {"a": 1}
    text = (await client.get(f"/v1/jobs/{done['id']}/result")).json()["text"]
    assert "every morning" in text.lower()
    missing = await client.post("/v1/jobs", json={"upload_id": uuid.uuid4().hex})
    assert_error(missing, 404, "not_found")
    assert_error(await client.post("/v1/jobs", json={"upload_id": "../etc"}), 400)


async def test_undecodable_audio_fails_once_with_a_clear_error(client):
    bogus = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200)) * 20
    response = await submit(client, bogus)
    assert response.status_code == 202, response.text  # only text is refused at the edge
    job = await wait_job(client, response.json()["id"])
    assert job["status"] == "failed" and job["attempts"] == 1  # bad input is not retried
    assert "audio" in job["error"].lower()
    assert not job["result_available"]
    assert_error(await client.get(f"/v1/jobs/{job['id']}/result"), 409, "conflict")


# ---- errors --------------------------------------------------------------------------------


async def test_unknown_jobs_are_404(client):
    missing = uuid.uuid4().hex
    for response in (
        await client.get(f"/v1/jobs/{missing}"),
        await client.get(f"/v1/jobs/{missing}/result"),
        await client.get(f"/v1/jobs/{missing}/events"),
        await client.delete(f"/v1/jobs/{missing}"),
        await client.get("/v1/jobs/not%20an%20id"),
    ):
        assert_error(response, 404, "not_found")


async def test_bad_submissions(client, data_dir):
    post = client.post
    assert_error(
        await post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}),
        400,
        "bad_request",
    )
    assert_error(
        await post("/v1/jobs", content=b"\xff\xfe", headers={"content-type": "application/json"}),
        400,
    )
    assert_error(await post("/v1/jobs", json=[1, 2]), 400)
    neither = await post("/v1/jobs", json={"model": "tiny.en"})
    assert_error(neither, 400, "bad_request")
    assert "exactly one" in neither.json()["error"]["message"]
    assert_error(await post("/v1/jobs", json={"url": "file:///etc/passwd"}), 400)
    assert_error(await post("/v1/jobs", json={"upload_id": "a", "url": "https://x/a.wav"}), 400)
    assert_error(await post("/v1/jobs", json={"upload_id": "a", "temperature": 3}), 400)
    assert_error(await post("/v1/jobs", json={"upload_id": "a\u0000b"}), 400)
    assert_error(await post("/v1/jobs", content=b"x"), 400)
    no_file = await post("/v1/jobs", data={"model": "tiny.en"}, files={"audio": ("a", b"RIFF")})
    assert_error(no_file, 400, "bad_request")
    assert "'file'" in no_file.json()["error"]["message"]
    hello = data_dir / "hello.wav"
    assert_error(await submit(client, hello, model="nope"), 400, "model_not_found")
    assert_error(await submit(client, hello, priority="12"), 400)
    assert_error(await submit(client, hello, metadata="{oops"), 400)
    assert_error(await submit(client, b""), 400, "empty_file")
    assert_error(await submit(client, b"<html></html>"), 415, "unsupported_media_type")
