"""The Grafana dashboard and the alert rules against a real Prometheus (Debian's package).

One app of its own (tiny.en, rate limits on, a webhook that fails once, a fast retention
sweep) gets real traffic; Prometheus on loopback scrapes its `GET /metrics` every 2 s.
Then every PromQL expression of deploy/grafana/whisper-serve.json and
deploy/prometheus/alerts.yaml must parse through the HTTP API, every dashboard panel must
return data, the rules must load and evaluate, and `promtool check rules` must pass. Last,
the panels are drawn from Prometheus' data and Chromium saves docs/grafana-dashboard.png.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from tests.fixtures.processes import HOST, find_binary, free_port, make_workdir, start_server
from tests.integration.conftest import deployed, transcribe

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from browser import screenshot  # noqa: E402  (script modules, found through sys.path)
from grafana_render import panel_queries, render  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DASHBOARD = ROOT / "deploy" / "grafana" / "whisper-serve.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
MODEL = "tiny.en"


def alert_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


@pytest.fixture(scope="module")
def app(ray_instance: dict, model_cache: Path, tmp_path_factory) -> Iterator[dict[str, Any]]:
    from serve_app.config import AppConfig

    root = tmp_path_factory.mktemp("prom-app")
    name = f"prom-{uuid.uuid4().hex[:6]}"
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
                "allow_private_urls": True,  # the webhook receiver is on loopback
            },
            # Tight enough that a burst of 120 requests meets 429s.
            "rate_limit": {
                "enabled": True,
                "default": {"requests_per_s": 2, "burst": 30, "max_concurrent": 16},
            },
            "retention": {"sweep_interval_s": 1, "audio_hours": 0},
            "models": [
                {
                    "name": MODEL,
                    "num_cpus": 0.2,
                    "cpu_threads": 2,
                    "batching": {"max_batch_size": 4, "batch_wait_timeout_s": 0.3},
                    "packing": {"mode": "on"},
                    "autoscaling": {"min_replicas": 1, "max_replicas": 1},
                }
            ],
        }
    )
    with deployed(config, name, ray_instance["http_url"]) as url:
        yield {"name": name, "url": url}


@pytest.fixture(scope="module")
def prometheus(app: dict[str, Any]) -> Iterator[str]:
    binary = find_binary("prometheus")
    workdir = make_workdir("pytest-prometheus-")
    port = free_port()
    target = urlsplit(app["url"])
    config = {
        "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {
                "job_name": "whisper-serve",
                "metrics_path": f"{target.path}/metrics",
                "static_configs": [{"targets": [target.netloc]}],
            }
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    argv = [
        binary,
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address={HOST}:{port}",
    ]
    server = start_server("prometheus", argv, workdir)
    url = f"http://{HOST}:{port}"
    try:
        server.wait_ready(lambda: httpx.get(f"{url}/-/ready", timeout=2).raise_for_status(), 60)
        yield url
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _poll_job(client: httpx.Client, job_id: str, timeout: float = 240) -> dict[str, Any]:
    """Like wait_job, but slow enough for the rate limit and patient with its 429s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/v1/jobs/{job_id}")
        if response.status_code == 200 and response.json()["status"] in ("succeeded", "failed"):
            return response.json()
        time.sleep(1.0)
    raise AssertionError(f"job {job_id} did not end in {timeout}s")


def _job(client: httpx.Client, clip: Path, webhook: str) -> str:
    with clip.open("rb") as audio:
        job = client.post(
            "/v1/jobs", files={"file": (clip.name, audio)}, data={"webhook_url": webhook}
        )
    assert job.status_code == 202, job.text
    assert _poll_job(client, job.json()["id"])["status"] == "succeeded"
    return str(job.json()["id"])


def _warm_up(url: str, data_dir: Path, webhook: str) -> None:
    """One of everything, so every series exists in Prometheus before the measured traffic
    (a rate over a series first scraped at its final value is 0, a quantile of it NaN)."""
    with httpx.Client(base_url=url, timeout=300) as client:
        assert transcribe(client, data_dir / "hello.wav").status_code == 200
        _job(client, data_dir / "weather.wav", webhook)


def _traffic(url: str, data_dir: Path, webhook: str) -> None:
    clips = ["hello.wav", "train.wav", "weather.wav", "numbers.wav", "kitchen.wav", "hello.wav"]
    with httpx.Client(base_url=url, timeout=300) as client:
        with ThreadPoolExecutor(len(clips)) as pool:  # several chunks for one batch
            replies = list(pool.map(lambda c: transcribe(client, data_dir / c), clips))
        assert [r.status_code for r in replies] == [200] * len(clips)
        assert transcribe(client, data_dir / "hello.wav", model="nope").status_code == 400
        job_id = _job(client, data_dir / "numbers.wav", webhook)
        time.sleep(3)  # the 1 s sweeper deletes the audio; then the job is purged
        with ThreadPoolExecutor(16) as pool:  # far faster than the bucket refills
            refused = list(pool.map(lambda _: client.get("/v1/models").status_code, range(120)))
        assert 429 in refused, refused
        time.sleep(2)  # a few tokens back
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 204


def _finite(prometheus: str, expr: str) -> bool:
    """The instant query returns at least one series with a real number."""
    result = _query(prometheus, expr)["data"]["result"]
    return any(sample["value"][1] not in ("NaN", "+Inf", "-Inf") for sample in result)


def _wait_for(prometheus: str, panels: list[tuple[str, str, str]], timeout: float) -> list[str]:
    """Poll until every panel query has a finite value; the queries still without one."""
    deadline = time.monotonic() + timeout
    pending = [expr for _, expr, _ in panels]
    while pending and time.monotonic() < deadline:
        pending = [expr for expr in pending if not _finite(prometheus, expr)]
        if pending:
            time.sleep(3)
    return pending


def _settle(
    prometheus: str, panels: list[tuple[str, str, str]], timeout: float, quiet_s: float
) -> None:
    """Wait until the warm-up's series are in: every panel has one, or none has appeared for
    `quiet_s` (some, like 429s and deletes, only come with the measured traffic)."""
    deadline = time.monotonic() + timeout
    seen, changed = -1, time.monotonic()
    while time.monotonic() < deadline:
        have = sum(bool(_query(prometheus, expr)["data"]["result"]) for _, expr, _ in panels)
        if have == len(panels):
            return
        if have != seen:
            seen, changed = have, time.monotonic()
        elif seen > 0 and time.monotonic() - changed >= quiet_s:
            return
        time.sleep(3)


def _query(prometheus: str, expr: str) -> dict[str, Any]:
    return httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=30).json()


def test_dashboard_and_alerts_against_real_prometheus(
    app, prometheus, webhook_receiver, data_dir, tmp_path
):
    dashboard = json.loads(DASHBOARD.read_text())
    panels = panel_queries(dashboard)
    assert len(dashboard["panels"]) >= 10
    # Every expression parses (a syntax error is a 400 "bad_data" from the API).
    for name, expr in [(t, e) for t, e, _ in panels] + alert_exprs():
        body = _query(prometheus, expr)
        assert body["status"] == "success", (name, expr, body)

    _warm_up(app["url"], data_dir, webhook_receiver["url"])
    _settle(prometheus, panels, timeout=180, quiet_s=12)
    time.sleep(15)  # the rate-limit bucket refills before the measured traffic
    started = time.time()
    _traffic(app["url"], data_dir, webhook_receiver["url"])
    assert webhook_receiver["posts"] >= 3  # refused once, then delivered twice

    # Every query of every panel returns a real number once the scrapes are in.
    pending = _wait_for(prometheus, panels, 150)
    if pending:  # say what Prometheus does have, and what the service exported
        names = httpx.get(f"{prometheus}/api/v1/label/__name__/values", timeout=30).json()
        exported = httpx.get(f"{app['url']}/metrics", timeout=30).text
        (tmp_path / "exported.txt").write_text(exported)
        pytest.fail(f"queries without data: {pending}; known: {names['data']}; see {tmp_path}")

    # The rules loaded and evaluate without errors.
    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=30).json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert sorted(r["name"] for r in rules) == sorted(name for name, _ in alert_exprs())
    assert all(r["health"] in ("ok", "unknown") for r in rules), rules
    checked = subprocess.run(
        [find_binary("promtool"), "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout

    # The README's picture: the dashboard's panels drawn from this Prometheus, in Chromium.
    page, counts = render(prometheus, started - 30, time.time() + 5)
    assert all(counts.values()), counts
    html_path = tmp_path / "dashboard.html"
    html_path.write_text(page)
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: run `make system-deps`"
    titles = [p["title"] for p in dashboard["panels"]]
    out = ROOT / "docs" / "grafana-dashboard.png"
    shot = asyncio.run(
        screenshot(html_path.as_uri(), out, titles, chromium, 60, settle_s=0.5, full_page=True)
    )
    assert shot["missing"] == []
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
