"""Request metrics labels (route template, model from the body, status) and the /metrics merge."""

from __future__ import annotations

import asyncio
from typing import Annotated

import pytest
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from serve_app.config import AppConfig
from serve_app.http.metrics import ModelSniffer, RequestMetricsMiddleware, merge_exposition


class Recorded:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, int]] = []

    def observe(self, route: str, method: str, model: str, status: int, seconds: float) -> None:
        assert seconds >= 0
        self.calls.append((route, method, model, status))


def _client() -> tuple[TestClient, Recorded]:
    config = AppConfig.model_validate(
        {"models": [{"name": "tiny.en", "aliases": ["whisper-1"]}, {"name": "base"}]}
    )
    app = FastAPI()
    recorder = Recorded()

    @app.middleware("http")
    async def refuse_before_routing(request, call_next):  # like the rate limit
        if request.headers.get("x-refuse"):
            return JSONResponse({"error": {"code": "rate_limited", "message": "no"}}, 429)
        return await call_next(request)

    # Added last, so outermost: it sees the refusals, as in the app.
    app.add_middleware(
        RequestMetricsMiddleware, config=config, recorder=recorder, routes=app.router.routes
    )

    @app.post("/v1/audio/transcriptions")
    async def transcribe(
        file: Annotated[UploadFile, File()], model: Annotated[str | None, Form()] = None
    ) -> dict:
        return {"size": len(await file.read())}

    @app.post("/v1/jobs")
    async def jobs(body: dict) -> dict:
        return body

    @app.get("/v1/jobs/{job_id}")
    async def job(job_id: str) -> dict:
        return {"id": job_id}

    return TestClient(app), recorder


def test_labels_use_route_templates_and_canonical_models():
    client, recorder = _client()
    files = {"file": ("a.wav", b"x" * 200_000)}
    assert client.post("/v1/audio/transcriptions", files=files, data={"model": "base"}).is_success
    client.post("/v1/audio/transcriptions", files=files, data={"model": "whisper-1"})
    client.post("/v1/audio/transcriptions", files=files)  # no model: the default one
    client.post("/v1/audio/transcriptions", files=files, data={"model": "nope"})
    client.post("/v1/jobs", json={"url": "http://x/a.wav", "model": "base"})
    client.get("/v1/jobs/abc123")
    client.get("/not/a/route")
    client.get("/v1/jobs/abc123", headers={"x-refuse": "1"})
    assert recorder.calls == [
        ("/v1/audio/transcriptions", "POST", "base", 200),
        ("/v1/audio/transcriptions", "POST", "tiny.en", 200),
        ("/v1/audio/transcriptions", "POST", "tiny.en", 200),
        ("/v1/audio/transcriptions", "POST", "unknown", 200),
        ("/v1/jobs", "POST", "base", 200),
        ("/v1/jobs/{job_id}", "GET", "-", 200),
        ("unmatched", "GET", "-", 404),
        ("/v1/jobs/{job_id}", "GET", "-", 429),
    ]


def test_a_request_cancelled_before_its_answer_counts_as_499_not_500():
    """Serve cancels the handler when the client goes (e.g. a Prometheus scrape time-out)."""
    recorder = Recorded()
    config = AppConfig.model_validate({"models": [{"name": "tiny.en"}]})

    async def slow_metrics(scope, receive, send) -> None:
        scope["route"] = type("Route", (), {"path": "/metrics"})()
        await asyncio.sleep(60)

    async def failing(scope, receive, send) -> None:
        raise RuntimeError("boom")

    async def scenario() -> None:
        scope = {"type": "http", "method": "GET", "path": "/metrics", "headers": []}

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            pass

        task = asyncio.create_task(
            RequestMetricsMiddleware(slow_metrics, config, recorder)(dict(scope), receive, send)
        )
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        with pytest.raises(RuntimeError):
            await RequestMetricsMiddleware(failing, config, recorder)(dict(scope), receive, send)

    asyncio.run(scenario())
    assert recorder.calls == [("/metrics", "GET", "-", 499), ("unmatched", "GET", "-", 500)]


def test_model_field_split_across_body_chunks_is_found():
    body = b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nbase\r\n--b--\r\n'
    for cut in range(1, len(body)):
        sniffer = ModelSniffer("multipart/form-data; boundary=b")
        sniffer.feed(body[:cut])
        sniffer.feed(body[cut:])
        assert sniffer.value == "base", cut


def test_merge_keeps_one_header_per_family_and_only_exported_prefixes():
    node_a = (
        "# HELP ray_whisper_batch_size Chunks.\n# TYPE ray_whisper_batch_size histogram\n"
        'ray_whisper_batch_size_bucket{le="1",model="tiny.en"} 1.0\n'
        'ray_whisper_batch_size_count{model="tiny.en"} 1.0\n'
        "# HELP ray_node_cpu_count CPUs.\n# TYPE ray_node_cpu_count gauge\nray_node_cpu_count 2.0\n"
    )
    node_b = (
        "# HELP ray_whisper_batch_size Chunks.\n# TYPE ray_whisper_batch_size histogram\n"
        'ray_whisper_batch_size_count{model="base"} 3.0\n'
        "# HELP ray_serve_num_http_requests_total Requests.\n"
        "# TYPE ray_serve_num_http_requests_total counter\n"
        'ray_serve_num_http_requests_total{route="/"} 4.0\n'
    )
    merged = merge_exposition([node_a, node_b]).splitlines()
    assert merged.count("# TYPE ray_whisper_batch_size histogram") == 1
    assert 'ray_whisper_batch_size_count{model="base"} 3.0' in merged
    assert 'ray_serve_num_http_requests_total{route="/"} 4.0' in merged
    assert not any("ray_node_cpu_count" in line for line in merged)
