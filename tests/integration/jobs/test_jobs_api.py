"""Job API end to end, once on embedded storage and once on Postgres + SeaweedFS + Redis."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from serve_app.jobs.webhooks import SIGNATURE_HEADER, SignatureError, verify
from tests.integration.conftest import transcribe
from tests.integration.jobs.conftest import WEBHOOK_SECRET, sse_events

pytestmark = pytest.mark.integration


def test_submit_is_durable_and_matches_sync(jobs_app, http, data_dir):
    response = jobs_app.submit(data_dir / "story.flac", model="tiny.en", word_timestamps="true")
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] in {"queued", "running"}
    # The row was committed before the 202: it is visible at once, from any replica.
    assert jobs_app.client.get(f"/v1/jobs/{job['id']}").status_code == 200
    done = jobs_app.wait(job["id"])
    assert done["status"] == "succeeded", done
    assert done["progress"] == 1.0 and done["done_chunks"] == done["total_chunks"] >= 2
    assert done["started_at"] and done["finished_at"]

    sync = transcribe(
        http,
        data_dir / "story.flac",
        model="tiny.en",
        response_format="verbose_json",
        **{"timestamp_granularities[]": ["word", "segment"]},
    ).json()
    result = jobs_app.client.get(f"/v1/jobs/{job['id']}/result?format=verbose_json").json()
    assert result["text"] == sync["text"]
    assert [w["word"] for w in result["words"]] == [w["word"] for w in sync["words"]]
    srt = jobs_app.client.get(f"/v1/jobs/{job['id']}/result", params={"format": "srt"})
    assert srt.status_code == 200 and "-->" in srt.text
    text = jobs_app.client.get(f"/v1/jobs/{job['id']}/result", params={"format": "text"})
    assert text.text.strip() == sync["text"]


def test_identical_audio_reuses_the_stored_result(jobs_app, data_dir):
    first = jobs_app.submit(data_dir / "hello.wav").json()
    jobs_app.wait(first["id"])
    again = jobs_app.submit(data_dir / "hello.wav")
    assert again.status_code == 200 and again.json()["id"] == first["id"]


def test_idempotency_key(jobs_app, data_dir):
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = jobs_app.submit(data_dir / "weather.wav", headers=key, model="tiny.en")
    assert first.status_code == 202
    repeat = jobs_app.submit(data_dir / "weather.wav", headers=key, model="tiny.en")
    assert repeat.status_code == 200 and repeat.json()["id"] == first.json()["id"]
    other = jobs_app.submit(data_dir / "kitchen.wav", headers=key, model="tiny.en")
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "conflict"


def test_list_get_and_errors(jobs_app, data_dir):
    ids = [
        jobs_app.submit(
            data_dir / "train.wav", headers={"Idempotency-Key": uuid.uuid4().hex}
        ).json()["id"]
        for _ in range(3)
    ]
    for job_id in ids:
        jobs_app.wait(job_id)
    page = jobs_app.client.get("/v1/jobs", params={"limit": 2}).json()
    assert len(page["data"]) == 2 and page["has_more"]
    rest = jobs_app.client.get("/v1/jobs", params={"limit": 200, "after": page["next_after"]})
    listed = [j["id"] for j in page["data"]] + [j["id"] for j in rest.json()["data"]]
    assert set(ids) <= set(listed) and len(listed) == len(set(listed))
    succeeded = jobs_app.client.get("/v1/jobs", params={"status": "succeeded"}).json()["data"]
    assert all(j["status"] == "succeeded" for j in succeeded)
    assert jobs_app.client.get("/v1/jobs", params={"status": "bogus"}).status_code == 400
    missing = jobs_app.client.get(f"/v1/jobs/{uuid.uuid4().hex}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert jobs_app.client.get(f"/v1/jobs/{uuid.uuid4().hex}/result").status_code == 404
    assert jobs_app.client.post("/v1/jobs", json={"model": "tiny.en"}).status_code == 400
    assert jobs_app.client.post("/v1/jobs", content=b"x").status_code == 400
    bad_model = jobs_app.submit(data_dir / "train.wav", model="nope")
    assert bad_model.status_code == 400
    not_audio = jobs_app.client.post("/v1/jobs", files={"file": ("a.wav", b"<html></html>")})
    assert not_audio.status_code == 415


def test_sse_progress_in_order_and_signed_webhook(jobs_app, data_dir, loopback):
    response = jobs_app.submit(
        data_dir / "story.flac",
        headers={"Idempotency-Key": uuid.uuid4().hex},
        webhook_url=f"{loopback.base}/hook",
        metadata=json.dumps({"customer": "c-1"}),
    )
    job_id = response.json()["id"]
    events = sse_events(jobs_app.client, f"/v1/jobs/{job_id}/events")
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "status" and kinds[-1] == "done"
    assert "progress" in kinds
    seqs = [data["seq"] for kind, data in events if kind != "status"]
    assert seqs == sorted(seqs)
    progress = [d["progress"] for k, d in events if k == "progress" and "progress" in d]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert any(d.get("text") for k, d in events if k == "progress")
    assert events[-1][1]["status"] == "succeeded"

    job = jobs_app.wait(job_id)
    assert job["metadata"] == {"customer": "c-1"}
    _wait_for(lambda: loopback.received)
    hook = loopback.received[0]
    signature = hook["headers"][SIGNATURE_HEADER]
    verify(WEBHOOK_SECRET, signature, hook["body"])
    payload = json.loads(hook["body"])
    assert payload["type"] == "job.succeeded" and payload["job"]["id"] == job_id
    with pytest.raises(SignatureError):
        verify(WEBHOOK_SECRET, signature, hook["body"] + b" ")
    with pytest.raises(SignatureError):
        verify("wrong", signature, hook["body"])


def test_webhook_retries_and_records_deliveries(jobs_app, data_dir, loopback):
    from serve_app.stores import open_job_store

    loopback.fail_first = 1
    job_id = jobs_app.submit(
        data_dir / "kitchen.wav",
        headers={"Idempotency-Key": uuid.uuid4().hex},
        webhook_url=f"{loopback.base}/hook",
    ).json()["id"]
    jobs_app.wait(job_id)
    _wait_for(lambda: len(loopback.received) >= 2, timeout=30)
    with open_job_store(jobs_app.storage["database_url"]) as store:
        deliveries = store.list_webhook_deliveries(job_id)
    assert [(d.attempt, d.ok) for d in deliveries][:2] == [(1, False), (2, True)]


def test_url_input(jobs_app, data_dir, loopback):
    loopback.files["/audio/train.wav"] = (data_dir / "train.wav").read_bytes()
    loopback.redirects["/go"] = "/audio/train.wav"
    response = jobs_app.client.post(
        "/v1/jobs",
        json={"url": f"{loopback.base}/go", "model": "tiny.en"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 202, response.text
    job = jobs_app.wait(response.json()["id"])
    assert job["status"] == "succeeded"
    text = jobs_app.client.get(f"/v1/jobs/{job['id']}/result").json()["text"]
    assert "every morning" in text.lower()
    for bad in (f"{loopback.base}/missing.wav", "file:///etc/passwd", "ftp://127.0.0.1/x"):
        refused = jobs_app.client.post("/v1/jobs", json={"url": bad})
        assert refused.status_code == 400, bad


def test_undecodable_audio_fails_once_with_a_clear_error(jobs_app):
    bogus = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200)) * 20
    job_id = jobs_app.client.post("/v1/jobs", files={"file": ("broken.wav", bogus)}).json()["id"]
    job = jobs_app.wait(job_id)
    assert job["status"] == "failed"
    assert job["attempts"] == 1  # not retried: the input itself is bad
    assert "audio" in job["error"].lower()
    result = jobs_app.client.get(f"/v1/jobs/{job_id}/result")
    assert result.status_code == 409


def test_presigned_upload(jobs_app, data_dir):
    response = jobs_app.client.post("/v1/uploads")
    if jobs_app.backend == "embedded":
        assert response.status_code == 400  # a local folder cannot presign
        return
    upload = response.json()
    assert upload["max_bytes"] == jobs_app.config.limits.max_upload_bytes and upload["expires_at"]
    audio = (data_dir / "numbers.wav").read_bytes()
    posted = httpx.post(upload["url"], data=upload["fields"], files={"file": ("n.wav", audio)})
    assert posted.status_code in (200, 201, 204), posted.text
    job = jobs_app.client.post(
        "/v1/jobs", json={"upload_id": upload["upload_id"], "model": "tiny.en"}
    ).json()
    done = jobs_app.wait(job["id"])
    assert done["status"] == "succeeded"
    missing = jobs_app.client.post("/v1/jobs", json={"upload_id": uuid.uuid4().hex})
    assert missing.status_code == 404


def _wait_for(predicate, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_python_client_and_cli(jobs_app, data_dir, tmp_path, capsys):
    from serve_app.client import JobError, JobsClient
    from serve_app.client.cli import main

    seen = []
    with JobsClient(jobs_app.url) as client:
        job = client.submit(
            data_dir / "numbers.wav", model="tiny.en", idempotency_key=uuid.uuid4().hex
        )
        final = client.wait(job["id"], on_progress=seen.append, timeout=120)
        assert final["status"] == "succeeded" and seen[-1]["status"] == "succeeded"
        assert "lunch" in client.result(job["id"])["text"].lower()
        assert client.result(job["id"], "vtt").startswith("WEBVTT")
        assert any(j["id"] == job["id"] for j in client.list(status="succeeded"))
        with pytest.raises(JobError, match="404"):
            client.get("nope")

    code = main(
        [
            "--url",
            jobs_app.url,
            "transcribe",
            str(data_dir / "kitchen.wav"),
            "--wait",
            "--format",
            "srt",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    assert "-->" in (tmp_path / "kitchen.srt").read_text()
    assert main(["--url", jobs_app.url, "status"]) == 0
    assert "succeeded" in capsys.readouterr().out
    assert main(["--url", jobs_app.url, "transcribe", str(tmp_path / "missing.wav")]) == 2
