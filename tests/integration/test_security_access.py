"""API keys, tenant isolation and per-key limits on the real stack (Postgres, Redis, S3, Ray)."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import wait_job
from tests.integration.test_security_helpers import SecurityApp, deploy_security_app

pytestmark = pytest.mark.integration

LIMITED = {"requests_per_s": 2.0, "burst": 5, "max_concurrent": 16, "max_active_jobs": 100}
SINGLE = {"requests_per_s": 500.0, "burst": 500, "max_concurrent": 1, "max_active_jobs": 1}
OVERRIDES = {
    "auth": {"enabled": True, "key_cache_s": 1.0},
    "rate_limit": {
        "enabled": True,
        "default": {"requests_per_s": 500.0, "burst": 500, "max_concurrent": 16},
        "per_key": {"limited": LIMITED, "single": SINGLE},
    },
    "jobs": {"allow_private_urls": False},
}


@pytest.fixture(scope="module")
def app(request, ray_instance, model_cache) -> Iterator[SecurityApp]:
    yield from deploy_security_app(request, ray_instance, model_cache, "sec-access", OVERRIDES)


@pytest.fixture(scope="module")
def keys(app: SecurityApp) -> dict[str, str]:
    return {
        "alice": app.create_key("tenant-a", "alice"),
        "bob": app.create_key("tenant-b", "bob"),
        "limited": app.create_key("tenant-c", "limited"),
        "single": app.create_key("tenant-d", "single"),
    }


def _submit(client: httpx.Client, path: Path, headers: dict | None = None, **data) -> dict:
    with path.open("rb") as handle:
        response = client.post(
            "/v1/jobs", files={"file": (path.name, handle)}, data=data, headers=headers
        )
    assert response.status_code in (200, 202), response.text
    return response.json()


def _transcribe(client: httpx.Client, path: Path) -> httpx.Response:
    with path.open("rb") as handle:
        return client.post("/v1/audio/transcriptions", files={"file": (path.name, handle)}, data={})


def test_probes_and_docs_are_public_everything_else_needs_a_key(app, keys):
    with app.client() as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        schema = anonymous.get("/openapi.json").json()
        assert "HTTPBearer" in schema["components"]["securitySchemes"]
        for method, path in [("GET", "/v1/models"), ("GET", "/v1/jobs"), ("POST", "/v1/uploads")]:
            assert anonymous.request(method, path).status_code == 401
    with app.client(keys["alice"]) as alice:
        assert alice.get("/v1/models").status_code == 200


def test_missing_unknown_malformed_and_revoked_keys_get_one_401(app, keys, capsys):
    from serve_app.client.cli import main

    db = ["--database-url", app.config.storage.database_url, "--tenant", "tenant-a"]
    assert main(["keys", "create", *db, "--name", "temp"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("ws_")
    with app.client(key) as client:
        assert client.get("/v1/jobs").status_code == 200
    assert main(["keys", "list", *db]) == 0
    listing = capsys.readouterr().out
    assert key not in listing
    key_id = next(line.split()[0] for line in listing.splitlines() if " temp " in line)
    assert main(["keys", "revoke", *db, key_id]) == 0
    assert main(["keys", "revoke", *db, key_id]) == 2  # already revoked
    capsys.readouterr()
    time.sleep(app.config.auth.key_cache_s + 0.5)  # replicas trust a verified key this long

    attempts = [
        {},
        {"authorization": f"Bearer {key}"},  # revoked
        {"authorization": f"Bearer ws_{uuid.uuid4().hex}"},  # unknown
        {"authorization": f"bearer {keys['alice']}x"},  # one character off
        {"authorization": f"Basic {keys['alice']}"},  # wrong scheme
        {"authorization": "Bearer " + "x" * 5000},  # absurdly long
    ]
    bodies = set()
    with httpx.Client(base_url=app.url, timeout=60) as client:
        for headers in attempts:
            response = client.get("/v1/jobs", headers=headers)
            assert response.status_code == 401, response.text
            assert response.headers["www-authenticate"] == "Bearer"
            bodies.add(response.text)
        # Refused from the headers alone: an upload is not read or buffered first.
        response = client.post(
            "/v1/audio/transcriptions", files={"file": ("a.wav", b"\0" * 100_000)}
        )
        assert response.status_code == 401
        bodies.add(response.text)
    assert len(bodies) == 1
    assert "unauthorized" in bodies.pop()
    with app.client(keys["alice"]) as alice:  # the tenant's other keys still work
        assert alice.get("/v1/jobs").status_code == 200


def test_keys_are_stored_only_as_sha256(app, keys):
    import psycopg

    with psycopg.connect(app.config.storage.database_url) as conn:
        rows = conn.execute("SELECT * FROM api_keys").fetchall()
    stored = " ".join(str(value) for row in rows for value in row)
    hashes = {row[3] for row in rows}
    for key in keys.values():
        assert key not in stored
        assert hashlib.sha256(key.encode()).hexdigest() in hashes


def test_openai_client_sends_its_api_key(app, keys, data_dir):
    from openai import AuthenticationError, OpenAI

    client = OpenAI(base_url=f"{app.url}/v1", api_key=keys["alice"], max_retries=0)
    with (data_dir / "hello.wav").open("rb") as audio:
        result = client.audio.transcriptions.create(model="tiny.en", file=audio)
    assert "hello" in result.text.lower()
    stranger = OpenAI(base_url=f"{app.url}/v1", api_key="ws_not-a-key", max_retries=0)
    with pytest.raises(AuthenticationError), (data_dir / "hello.wav").open("rb") as audio:
        stranger.audio.transcriptions.create(model="tiny.en", file=audio)


def test_cross_tenant_access_matrix(app, keys, data_dir):
    with app.client(keys["alice"]) as alice, app.client(keys["bob"]) as bob:
        shared = {"Idempotency-Key": "same-key-in-two-tenants"}
        done = _submit(alice, data_dir / "hello.wav", headers=shared)
        assert wait_job(alice, done["id"])["status"] == "succeeded"
        active = _submit(alice, data_dir / "story.flac")  # still queued/running below
        upload_id = alice.post("/v1/uploads").json()["upload_id"]

        unknown = uuid.uuid4().hex
        reference = bob.get(f"/v1/jobs/{unknown}")
        assert reference.status_code == 404
        for job_id in (done["id"], active["id"]):
            for method, path in [
                ("GET", f"/v1/jobs/{job_id}"),
                ("GET", f"/v1/jobs/{job_id}/result"),
                ("GET", f"/v1/jobs/{job_id}/result?format=srt"),
                ("GET", f"/v1/jobs/{job_id}/events"),
                ("DELETE", f"/v1/jobs/{job_id}"),
            ]:
                response = bob.request(method, path)
                assert response.status_code == 404, (method, path, response.text)
                # Exactly what a job that does not exist gets: no hint that it does.
                assert response.text == reference.text.replace(unknown, job_id)
        assert bob.get("/v1/jobs", params={"after": done["id"]}).status_code == 404
        listed = {job["id"] for job in bob.get("/v1/jobs").json()["data"]}
        assert not listed & {done["id"], active["id"]}
        stolen_upload = bob.post("/v1/jobs", json={"upload_id": upload_id})
        assert stolen_upload.status_code == 404
        # Same audio and the same Idempotency-Key in another tenant: a new job of its own.
        own = _submit(bob, data_dir / "hello.wav", headers=shared)
        assert own["id"] not in (done["id"], active["id"])

        # The owner is unaffected: bob's DELETE did not cancel alice's job.
        assert alice.get(f"/v1/jobs/{active['id']}").json()["status"] != "cancelled"
        result = alice.get(f"/v1/jobs/{done['id']}/result")
        assert result.status_code == 200 and "hello" in result.json()["text"].lower()
        assert bob.delete(f"/v1/jobs/{own['id']}").status_code in (200, 204)  # cancel or purge


def test_two_clients_sharing_a_key_get_at_most_the_bucket(app, keys):
    """capacity + rate * t + 1 requests at most, t measured around the whole run."""
    import redis

    outcomes: list[tuple[int, str | None, str]] = []
    lock = threading.Lock()
    start = time.monotonic()
    stop = start + 4.0

    def hammer() -> None:
        with app.client(keys["limited"]) as client:
            while time.monotonic() < stop:
                response = client.get("/v1/jobs", params={"limit": 1})
                code = response.json().get("error", {}).get("code", "")
                with lock:
                    outcomes.append(
                        (response.status_code, response.headers.get("retry-after"), code)
                    )

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start

    passed = sum(1 for status, _, _ in outcomes if status == 200)
    refused = [(after, code) for status, after, code in outcomes if status == 429]
    assert {status for status, _, _ in outcomes} <= {200, 429}
    bound = LIMITED["burst"] + LIMITED["requests_per_s"] * elapsed + 1
    assert LIMITED["burst"] <= passed <= bound, (passed, bound, elapsed, len(outcomes))
    assert refused and all(code == "rate_limited" for _, code in refused)
    assert all(after is not None and int(after) >= 1 for after, _ in refused)
    # The bucket lives in Redis (shared by every ingress replica), not in the replica.
    with redis.Redis.from_url(app.config.storage.redis_url) as client:
        assert client.keys("whisper:rl:bucket:*")
    # Limits are per key: another key of the same app is not throttled by this one.
    with app.client(keys["alice"]) as alice:
        assert all(alice.get("/v1/jobs").status_code == 200 for _ in range(20))


def test_concurrency_quota_and_active_jobs_quota(app, keys, data_dir):
    def one(_: int) -> httpx.Response:
        with app.client(keys["single"]) as client:
            return _transcribe(client, data_dir / "story.flac")

    with ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(one, range(3)))
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and 429 in statuses, statuses
    for response in responses:
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1

    with app.client(keys["single"]) as client:
        first = _submit(client, data_dir / "story.flac", prompt="quota")
        with (data_dir / "hello.wav").open("rb") as handle:
            refused = client.post("/v1/jobs", files={"file": ("hello.wav", handle)})
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        wait_job(client, first["id"])
        _submit(client, data_dir / "hello.wav")  # a slot is free again
