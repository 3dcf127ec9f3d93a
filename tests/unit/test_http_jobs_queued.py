"""The job API through HTTP, in-process: queued jobs (cancel, delete, listing), idempotency and
reuse of finished jobs, and the server-sent event stream.

Tests that need a job to stay queued use `idle_stack` (the tracker is stopped, so nothing
leases the job) and restart the tracker with `tracker.start()` when the job should run.
"""

from __future__ import annotations

import asyncio
import uuid

from serve_app.jobs.tracker import EventBatch, JobTracker
from serve_app.testing import LocalStack, LocalTrackerClient
from tests.unit.conftest import LOOP, assert_error, sse_events, wait_job
from tests.unit.job_support import submit

pytestmark = LOOP


def _key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


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
