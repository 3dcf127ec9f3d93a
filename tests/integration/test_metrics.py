"""GET /metrics after real traffic: batching, RTF, requests, job outcomes and webhooks."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from benchmarks.chaos_kill import actor_pid
from tests.integration.conftest import deployed, transcribe, wait_job

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "tiny.en"


@pytest.fixture(scope="module")
def metrics_app(ray_instance: dict, model_cache: Path, tmp_path_factory) -> Iterator[dict]:
    """A jobs-enabled tiny.en app of its own, so its series can be told apart by label."""
    from serve_app.config import AppConfig

    root = tmp_path_factory.mktemp("metrics-app")
    name = f"metrics-{uuid.uuid4().hex[:6]}"
    config = AppConfig.model_validate(
        {
            "default_model": MODEL,
            "model_cache_dir": str(model_cache),
            "ingress": {"num_cpus": 0.1},
            "storage": {"database_url": f"sqlite:///{root}/jobs.db", "blob_url": f"file://{root}"},
            "jobs": {
                "tracker_name": f"tracker-{name}",
                "tracker_num_cpus": 0.05,
                "poll_interval_s": 0.5,
                "webhook_secret": "s3cret",
                "webhook_attempts": 3,
                "allow_private_urls": True,  # the webhook receiver below is on loopback
            },
            "models": [
                {
                    "name": MODEL,
                    "num_cpus": 0.2,
                    "cpu_threads": 2,
                    "batching": {"max_batch_size": 4, "batch_wait_timeout_s": 0.3},
                }
            ],
        }
    )
    with deployed(config, name, ray_instance["http_url"]) as url:
        yield {"name": name, "url": url, "config": config}


def test_metrics_endpoint_shows_batching_rtf_requests_jobs_and_webhooks(
    metrics_app, webhook_receiver, data_dir
):
    app = metrics_app["name"]
    clips = ["hello.wav", "train.wav", "weather.wav", "numbers.wav", "kitchen.wav", "hello.wav"]
    with httpx.Client(base_url=metrics_app["url"], timeout=300) as client:
        # Concurrent requests, so the Transcriber has several chunks to batch together.
        with ThreadPoolExecutor(len(clips)) as pool:
            replies = list(pool.map(lambda c: transcribe(client, data_dir / c), clips))
        assert [r.status_code for r in replies] == [200] * len(clips)
        assert transcribe(client, data_dir / "hello.wav", model="nope").status_code == 400

        with (data_dir / "hello.wav").open("rb") as audio:
            job = client.post(
                "/v1/jobs",
                files={"file": ("hello.wav", audio)},
                data={"webhook_url": webhook_receiver["url"]},
            )
        assert job.status_code == 202, job.text
        assert wait_job(client, job.json()["id"])["status"] == "succeeded"

        # Ray's agents export every few seconds: poll until every figure has arrived.
        deadline = time.monotonic() + 120
        checks: dict[str, bool] = {}
        while time.monotonic() < deadline:
            response = client.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain")
            samples = _parse(response.text)
            checks = _checks(samples, app)
            if all(checks.values()):
                break
            time.sleep(2)
    assert all(checks.values()), checks
    assert webhook_receiver["posts"] >= 2  # one refused, one delivered


def _checks(samples: list[tuple[str, dict[str, str], float]], app: str) -> dict[str, bool]:
    def total(name: str, **labels: str) -> float:
        return sum(
            value
            for sample, tags, value in samples
            if sample == name and all(tags.get(k) == v for k, v in labels.items())
        )

    ours = {"application": app, "model": MODEL}
    route = "/v1/audio/transcriptions"
    return {
        "batch size count": total("ray_whisper_batch_size_count", **ours) > 0,
        "batch size sum": total("ray_whisper_batch_size_sum", **ours) > 0,
        "rtf count": total("ray_whisper_batch_rtf_count", **ours) > 0,
        "rtf sum": total("ray_whisper_batch_rtf_sum", **ours) > 0,
        "audio seconds": total("ray_whisper_audio_seconds_total", **ours) > 0,
        "queue wait": total("ray_whisper_chunk_queue_wait_seconds_count", **ours) > 0,
        "queue depth": any(s == "ray_whisper_queue_depth" for s, _, _ in samples),
        "requests 200": total(
            "ray_whisper_http_requests_total", application=app, route=route, status="200"
        )
        >= 6,
        "requests by model": total(
            "ray_whisper_http_requests_total", application=app, route=route, model=MODEL
        )
        >= 6,
        "requests 400": total(
            "ray_whisper_http_requests_total", application=app, model="unknown", status="400"
        )
        >= 1,
        "request latency": total("ray_whisper_http_request_seconds_count", application=app) > 0,
        "job outcome": total("ray_whisper_jobs_finished_total", model=MODEL, status="succeeded")
        >= 1,
        "webhook ok": total("ray_whisper_webhook_deliveries_total", outcome="ok") >= 1,
        "webhook failed": total("ray_whisper_webhook_deliveries_total", outcome="failed") >= 1,
        "serve metrics": any(s.startswith("ray_serve_") for s, _, _ in samples),
    }


def _parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Parse strictly with prometheus_client: the endpoint must be valid exposition text."""
    from prometheus_client.parser import text_string_to_metric_families

    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def _task_niceness(proc: Path) -> list[int]:
    """Niceness of every thread of one /proc entry."""
    # Field 19 of stat is the niceness; the command (field 2) may hold spaces.
    return [
        int((task / "stat").read_text().rsplit(")", 1)[1].split()[16])
        for task in (proc / "task").iterdir()
    ]


def _thread_niceness(title: str) -> list[int]:
    """Niceness of every thread of the processes whose title contains `title`."""
    found: list[int] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if title in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found += _task_niceness(proc)
        except OSError:  # the process or thread ended meanwhile
            continue
    return found


def test_models_and_tracker_leave_the_cpu_to_the_ingress_first(metrics_app: dict) -> None:
    import ray

    name, config = metrics_app["name"], metrics_app["config"]
    ingress = _thread_niceness(f"ServeReplica:{name}:Ingress")
    assert ingress
    base = min(ingress)
    tracker = ray.get_actor(config.jobs.tracker_name, namespace=config.jobs.namespace)
    tracker_pid = actor_pid(tracker)
    for title, nice in [
        (f"ServeReplica:{name}:Transcriber", config.models[0].nice),
        (f"ServeReplica:{name}:SpeakerEmbedder", config.speaker_embedder.nice),
    ]:
        threads = _thread_niceness(title)
        assert threads and min(threads) >= min(19, base + nice), (title, base, threads)
    threads = _task_niceness(Path(f"/proc/{tracker_pid}"))
    assert threads and min(threads) >= min(19, base + config.jobs.tracker_nice), threads
    assert config.models[0].nice == config.jobs.tracker_nice == 10  # the defaults
