"""A jobs-enabled app per storage backend: embedded defaults, and Postgres + SeaweedFS + Redis."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import deployed, wait_job
from tests.text import SseReader

WEBHOOK_SECRET = "test-webhook-secret"


@dataclass
class JobsApp:
    backend: str
    url: str
    name: str
    config: Any
    storage: dict[str, Any]
    client: httpx.Client

    def submit(self, path: Path, *, headers: dict | None = None, **data: Any) -> httpx.Response:
        with path.open("rb") as handle:
            return self.client.post(
                "/v1/jobs", files={"file": (path.name, handle)}, data=data, headers=headers
            )

    def wait(self, job_id: str, timeout: float = 240) -> dict[str, Any]:
        return wait_job(self.client, job_id, timeout)

    def tracker(self):
        import ray

        return ray.get_actor(self.config.jobs.tracker_name, namespace=self.config.jobs.namespace)


def jobs_app_config(model_cache: Path, backend: str, storage: dict[str, Any], name: str):
    from serve_app.config import AppConfig

    return AppConfig.model_validate(
        {
            "default_model": "tiny.en",
            "model_cache_dir": str(model_cache),
            "ingress": {"num_cpus": 0.1},
            "limits": {"max_upload_bytes": 16 * 1024 * 1024},
            "storage": storage,
            "jobs": {
                "tracker_name": f"tracker-{name}",
                "tracker_num_cpus": 0.05,
                "max_concurrent_jobs": 4,
                "lease_seconds": 6,
                "retry_base_s": 0.5,
                "retry_max_s": 4,
                "poll_interval_s": 0.5,
                "max_attempts": 4,
                "webhook_secret": WEBHOOK_SECRET,
                "webhook_attempts": 3,
                "allow_private_urls": True,  # the tests' URL and webhook servers are loopback
            },
            "models": [
                {
                    "name": "tiny.en",
                    "num_cpus": 0.3,
                    "cpu_threads": 2,
                    "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.1},
                    "packing": {"mode": "off"},  # results are compared with the sync path
                }
            ],
        }
    )


def real_storage(request: pytest.FixtureRequest) -> dict[str, Any]:
    server = request.getfixturevalue("postgres_server")
    template = request.getfixturevalue("postgres_template")
    settings = request.getfixturevalue("s3_settings")
    bucket = request.getfixturevalue("s3_bucket")
    return {
        "database_url": server.url(server.create_database(template)),
        "blob_url": f"s3://{bucket}/jobs-{uuid.uuid4().hex[:8]}",
        "redis_url": request.getfixturevalue("redis_server_url"),
        "s3": {
            "endpoint_url": settings.endpoint_url,
            "region": settings.region,
            "access_key_id": settings.access_key_id,
            "secret_access_key": settings.secret_access_key,
        },
    }


def deploy_jobs_app(
    request: pytest.FixtureRequest,
    backend: str,
    ray_instance: dict,
    model_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[JobsApp]:
    if backend == "embedded":
        root = tmp_path_factory.mktemp("embedded-storage")
        storage = {"database_url": f"sqlite:///{root}/jobs.db", "blob_url": f"file://{root}/blobs"}
    else:
        storage = real_storage(request)
    name = f"jobs-{backend}-{uuid.uuid4().hex[:6]}"
    config = jobs_app_config(model_cache, backend, storage, name)
    with (
        deployed(config, name, ray_instance["http_url"]) as url,
        httpx.Client(base_url=url, timeout=120) as client,
    ):
        yield JobsApp(backend, url, name, config, storage, client)


@pytest.fixture(
    scope="module", params=["embedded", pytest.param("real", marks=pytest.mark.integration)]
)
def jobs_app(
    request: pytest.FixtureRequest, ray_instance: dict, model_cache: Path, tmp_path_factory
) -> Iterator[JobsApp]:
    yield from deploy_jobs_app(request, request.param, ray_instance, model_cache, tmp_path_factory)


@pytest.fixture(scope="module")
def real_jobs_app(
    request: pytest.FixtureRequest, ray_instance: dict, model_cache: Path, tmp_path_factory
) -> Iterator[JobsApp]:
    """Postgres + SeaweedFS + Redis only: for the failure drills."""
    yield from deploy_jobs_app(request, "real", ray_instance, model_cache, tmp_path_factory)


@dataclass
class LoopbackServer:
    """A tiny HTTP server on 127.0.0.1: serves `files`, records POSTed webhooks."""

    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    fail_first: int = 0
    port: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def loopback() -> Iterator[LoopbackServer]:
    state = LoopbackServer()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return None

        def do_GET(self) -> None:
            if self.path in state.redirects:
                self.send_response(302)
                self.send_header("Location", state.redirects[self.path])
                self.end_headers()
                return
            body = state.files.get(self.path)
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.received.append({"headers": dict(self.headers), "body": body})
            failing = len(state.received) <= state.fail_first
            self.send_response(500 if failing else 204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def sse_events(client: httpx.Client, path: str, timeout: float = 240) -> list[tuple[str, dict]]:
    reader = SseReader()
    with client.stream("GET", path, timeout=timeout) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if reader.feed(line):
                break
    return reader.events
