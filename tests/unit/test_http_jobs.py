"""The job API through HTTP, in-process: JobsFrontend, a real JobTracker and SQLite + folder.

Tests that need a job to stay queued use `idle_stack` (the tracker is stopped, so nothing
leases the job) and restart the tracker with `tracker.start()` when the job should run.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx

from serve_app.jobs.frontend import upload_key
from serve_app.jobs.runner import job_options
from serve_app.jobs.tracker import EventBatch, JobTracker
from serve_app.options import TranscribeOptions
from serve_app.testing import LocalStack, LocalTrackerClient
from tests.text import wer
from tests.unit.conftest import LOOP, assert_error, sse_events, wait_job

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


async def submit(
    client: httpx.AsyncClient,
    audio: Path | bytes,
    *,
    headers: dict[str, str] | None = None,
    **data: Any,
) -> httpx.Response:
    if isinstance(audio, Path):
        name, content = audio.name, audio.read_bytes()
    else:
        name, content = "audio.wav", audio
    return await client.post(
        "/v1/jobs", files={"file": (name, content)}, data=data, headers=headers
    )


def _key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


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


# ---- queued jobs (tracker stopped) ---------------------------------------------------------


async def test_result_before_success_and_cancel_while_queued(idle_stack, client, data_dir):
    job = (await submit(client, data_dir / "hello.wav")).json()
    assert job["status"] == "queued" and job["progress"] is None
    assert job["total_chunks"] is None and job["attempts"] == 0
    early = await client.get(f"/v1/jobs/{job['id']}/result")
    assert_error(early, 409, "conflict")
    assert "queued" in early.json()["error"]["message"]

    cancelled = await client.delete(f"/v1/jobs/{job['id']}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["finished_at"]

    # A restarted tracker runs the next job (FIFO) but not the cancelled one.
    idle_stack.tracker.start()
    later = (await submit(client, data_dir / "hello.wav")).json()
    assert (await wait_job(client, later["id"]))["status"] == "succeeded"
    status = (await client.get(f"/v1/jobs/{job['id']}")).json()
    assert status["status"] == "cancelled" and status["attempts"] == 0
    assert_error(await client.get(f"/v1/jobs/{job['id']}/result"), 409, "conflict")
    events = await sse_events(client, f"/v1/jobs/{job['id']}/events")
    assert [kind for kind, _ in events] == ["status", "done"]
    assert events[-1][1]["status"] == "cancelled"
    # A second DELETE finds the job ended: it is deleted outright.
    assert (await client.delete(f"/v1/jobs/{job['id']}")).status_code == 204
    assert_error(await client.get(f"/v1/jobs/{job['id']}"), 404, "not_found")


async def test_delete_a_finished_job_purges_it(stack, client, data_dir):
    job = (await submit(client, data_dir / "hello.wav")).json()
    done = await wait_job(client, job["id"])
    assert done["status"] == "succeeded"
    assert (await client.get(f"/v1/jobs/{job['id']}/result")).status_code == 200
    row = stack.jobs.store.get_job(job["id"])
    assert row.audio_key and row.result_key
    assert stack.jobs.blobs.exists(row.audio_key) and stack.jobs.blobs.exists(row.result_key)

    response = await client.delete(f"/v1/jobs/{job['id']}")
    assert response.status_code == 204 and response.content == b""
    assert not stack.jobs.blobs.exists(row.audio_key)
    assert not stack.jobs.blobs.exists(row.result_key)
    for path in ("", "/result", "/events"):
        assert_error(await client.get(f"/v1/jobs/{job['id']}{path}"), 404, "not_found")
    assert_error(await client.delete(f"/v1/jobs/{job['id']}"), 404, "not_found")
    # The same audio again is not answered from the purged job: it runs anew.
    again = await submit(client, data_dir / "hello.wav")
    assert again.status_code == 202 and again.json()["id"] != job["id"]
    assert (await wait_job(client, again.json()["id"]))["status"] == "succeeded"


async def test_list_pagination(idle_stack, client, data_dir):
    hello = data_dir / "hello.wav"
    ids = []
    for _ in range(5):  # identical audio: queued jobs are not deduplicated
        response = await submit(client, hello)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    assert len(set(ids)) == 5
    newest_first = ids[::-1]

    first = await client.get("/v1/jobs", params={"limit": 2})
    assert first.status_code == 200, first.text
    page = first.json()
    assert page["object"] == "list" and page["has_more"] is True
    assert [j["id"] for j in page["data"]] == newest_first[:2]
    assert page["next_after"] == newest_first[1]
    queue = page["queue"]  # the whole tenant, not the page
    assert (queue["queued"], queue["running"], queue["weight"]) == (5, 0, 1.0)
    assert queue["oldest_queued_age_s"] >= 0

    second = (await client.get("/v1/jobs", params={"limit": 2, "after": page["next_after"]})).json()
    assert [j["id"] for j in second["data"]] == newest_first[2:4] and second["has_more"]
    last = (await client.get("/v1/jobs", params={"limit": 2, "after": second["next_after"]})).json()
    assert [j["id"] for j in last["data"]] == newest_first[4:]
    assert last["has_more"] is False and last["next_after"] is None

    exact = (await client.get("/v1/jobs", params={"limit": 5})).json()
    assert len(exact["data"]) == 5 and exact["has_more"] is False and exact["next_after"] is None

    await client.delete(f"/v1/jobs/{ids[0]}")
    queued = (await client.get("/v1/jobs", params={"status": "queued"})).json()["data"]
    assert [j["id"] for j in queued] == newest_first[:4]
    cancelled = (await client.get("/v1/jobs", params={"status": "cancelled"})).json()["data"]
    assert [j["id"] for j in cancelled] == [ids[0]]
    assert (await client.get("/v1/jobs")).json()["queue"]["queued"] == 4

    assert_error(await client.get("/v1/jobs", params={"status": "bogus"}), 400)
    assert_error(await client.get("/v1/jobs", params={"limit": 0}), 400)
    assert_error(await client.get("/v1/jobs", params={"limit": 201}), 400)
    assert_error(await client.get("/v1/jobs", params={"after": "no/such"}), 404)


async def test_idempotency_key(idle_stack, client, data_dir):
    key = _key()
    first = await submit(client, data_dir / "hello.wav", headers=key, model="tiny.en")
    assert first.status_code == 202, first.text
    repeat = await submit(client, data_dir / "hello.wav", headers=key, model="tiny.en")
    assert repeat.status_code == 200, repeat.text
    assert repeat.json()["id"] == first.json()["id"]
    other = await submit(client, data_dir / "train.wav", headers=key, model="tiny.en")
    assert_error(other, 409, "conflict")
    changed = await submit(client, data_dir / "hello.wav", headers=key, beam_size="2")
    assert_error(changed, 409, "conflict")
    fresh = await submit(client, data_dir / "hello.wav", headers=_key())
    assert fresh.status_code == 202 and fresh.json()["id"] != first.json()["id"]


async def test_identical_audio_and_options_reuse_a_finished_job(client, data_dir):
    first = (await submit(client, data_dir / "hello.wav")).json()
    assert (await wait_job(client, first["id"]))["status"] == "succeeded"
    again = await submit(client, data_dir / "hello.wav")
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first["id"] and again.json()["status"] == "succeeded"
    alias = await submit(client, data_dir / "hello.wav", model="whisper-1")
    assert alias.status_code == 200 and alias.json()["id"] == first["id"]
    # Other options, or an explicit idempotency key, make a new job.
    other = await submit(client, data_dir / "hello.wav", word_timestamps="true")
    assert other.status_code == 202 and other.json()["id"] != first["id"]
    keyed = await submit(client, data_dir / "hello.wav", headers=_key())
    assert keyed.status_code == 202 and keyed.json()["id"] != first["id"]
    for job_id in (other.json()["id"], keyed.json()["id"]):
        assert (await wait_job(client, job_id))["status"] == "succeeded"


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


# ---- server-sent events --------------------------------------------------------------------


class _SignallingTracker(LocalTrackerClient):
    """Sets `polling` once a stream has sent its snapshot and waits for the tracker."""

    def __init__(self, tracker: JobTracker) -> None:
        super().__init__(tracker)
        self.polling = asyncio.Event()

    async def events_since(self, job_id: str, after: int, timeout_s: float) -> EventBatch:
        self.polling.set()
        return await super().events_since(job_id, after, timeout_s)


async def test_sse_streams_status_progress_and_done(idle_stack: LocalStack, client, data_dir):
    assert idle_stack.jobs is not None and idle_stack.tracker is not None
    tracker = _SignallingTracker(idle_stack.tracker)
    idle_stack.jobs.tracker = tracker
    job_id = (await submit(client, data_dir / "story.flac")).json()["id"]
    # The stream takes its snapshot while the job is queued, then the tracker runs it.
    stream = asyncio.ensure_future(sse_events(client, f"/v1/jobs/{job_id}/events"))
    await asyncio.wait_for(tracker.polling.wait(), 30)
    idle_stack.tracker.start()
    events = await asyncio.wait_for(stream, 90)

    kinds = [kind for kind, _ in events]
    assert kinds[0] == "status" and events[0][1]["status"] == "queued"
    assert kinds[-1] == "done" and kinds.count("done") == 1
    assert events[-1][1]["status"] == "succeeded" and events[-1][1]["id"] == job_id
    seqs = [data["seq"] for kind, data in events[1:]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    progress = [d for k, d in events if k == "progress" and "progress" in d]
    ratios = [d["progress"] for d in progress]
    assert ratios == sorted(ratios) and ratios[-1] == 1.0
    chunks = [d for d in progress if "chunk_index" in d]
    assert sorted(d["chunk_index"] for d in chunks) == [0, 1]  # story.flac: two chunks
    assert all(d["total_chunks"] == 2 and d["text"] for d in chunks)

    # A finished job's stream is a snapshot and `done`.
    replay = await sse_events(client, f"/v1/jobs/{job_id}/events")
    assert [kind for kind, _ in replay] == ["status", "done"]
    assert replay[0][1]["status"] == "succeeded"
