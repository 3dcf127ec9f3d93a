"""Chaos suite (issue 16): faults under a small bounded load, one table per scenario.

    python -m benchmarks.chaos            # every scenario, 5 s outages and phases
    python -m benchmarks.chaos --quick    # 2 s outages and phases
    python -m benchmarks.chaos --scenarios postgres,stalled

Scenarios: `postgres`, `redis`, `s3` (the real server stopped and started again while sync
transcriptions, a job submit per second, job lists and `/healthz` keep coming), `stalled`
(200 uploads that send headers and 1 kB, then nothing, against uvicorn serving the app) and
`oversize` (a 2 GiB `Content-Length`, and a chunked raw body that never ends). The service
is `serve_app.testing.LocalStack` (the Ingress's HTTP app, job front end and tracker,
without Ray) over throwaway Postgres, Redis and SeaweedFS started like the tests'. Each
table: statuses per phase (before / during / recovering = the first 2 s after the backend
is back / after), worst latency, jobs lost or duplicated, recovery time (backend back →
last abnormal answer) and the process's peak RSS.

`transcriber` (`transcriber:2`: with `ingress.replica_wait_s` 2 instead of 10) and `tracker`
`kill -9` the only Transcriber replica or the job tracker of an app deployed on a Ray
started for them (`benchmarks/chaos_kill.py`): phases before / during (the kill until the
restart is done) / after, jobs submitted just before the kill followed to the end, recovery
= the restart. CI's smoke test runs only `stalled,oversize` with `--quick`; the kills take
~40 s each and stay out of it. JSON + markdown go to `benchmarks/results/chaos.{json,md}`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import psutil

RESULTS = Path(__file__).parent / "results"
ANSWER_S = 2.0
RECOVERY_S = 2.0
PHASES = ("before", "during", "recovering", "after")


class Control(Protocol):
    """A server that can be stopped and started again (`tests.fixtures.processes.Restartable`)."""

    def stop(self) -> None: ...
    def start(self) -> None: ...


@dataclass
class Outcome:
    kind: str
    phase: str
    status: int  # 0: no answer within the client's timeout
    seconds: float
    code: str | None = None
    retry_after: str | None = None
    ended: str = ""  # the phase when the answer came
    timing: str | None = None  # Server-Timing of a sync answer
    at: float = 0.0  # monotonic time of the answer

    @property
    def normal_phase(self) -> bool:
        """Sent and answered while the backend was up (before the stop, or 2 s after it is back)."""
        return (self.phase, self.ended) in (("before", "before"), ("after", "after"))


@dataclass
class Load:
    """Bounded load: each worker sends one request at a time, tagged with the current phase."""

    client: httpx.AsyncClient
    audio: bytes
    phase: str = "before"
    outcomes: list[Outcome] = field(default_factory=list)
    accepted: dict[str, str] = field(default_factory=dict)  # idempotency key -> job id
    refused: list[str] = field(default_factory=list)  # idempotency keys answered 503
    running: bool = True
    timeout_s: float = 10.0  # longer: no answer (status 0)

    async def one(self, kind: str, send: Callable[[], Awaitable[httpx.Response]]) -> Any:
        phase, started = self.phase, time.monotonic()
        try:
            response = await asyncio.wait_for(send(), timeout=self.timeout_s)
        except (TimeoutError, httpx.HTTPError):
            now = time.monotonic()
            self.outcomes.append(Outcome(kind, phase, 0, now - started, ended=self.phase, at=now))
            return None
        code = None
        if response.status_code >= 400:
            code = response.json().get("error", {}).get("code")
        now = time.monotonic()
        self.outcomes.append(
            Outcome(
                kind,
                phase,
                response.status_code,
                now - started,
                code,
                response.headers.get("retry-after"),
                self.phase,
                response.headers.get("server-timing"),
                now,
            )
        )
        return response

    async def sync_worker(self) -> None:
        while self.running:
            files = {"file": ("hello.wav", self.audio)}
            post = functools.partial(self.client.post, "/v1/audio/transcriptions", files=files)
            await self.one("sync", post)

    async def submit_worker(self) -> None:
        while self.running:
            key = uuid.uuid4().hex
            response = await self.one("submit", functools.partial(self.submit, key))
            if response is not None and response.status_code in (200, 202):
                self.accepted[key] = response.json()["id"]
            elif response is not None and response.status_code == 503:
                self.refused.append(key)
            await asyncio.sleep(1.0)  # a job is ~0.5 s of model time: keep below saturation

    def submit(self, key: str) -> Awaitable[httpx.Response]:
        files = {"file": ("hello.wav", self.audio)}
        return self.client.post("/v1/jobs", files=files, headers={"idempotency-key": key})

    async def read_worker(self) -> None:
        while self.running:
            await self.one("list", functools.partial(self.client.get, "/v1/jobs"))
            await self.one("healthz", functools.partial(self.client.get, "/healthz"))
            await asyncio.sleep(0.2)


@dataclass
class OutageRun:
    load: Load
    returned: float  # monotonic time the backend was back
    lost: int
    duplicated: int


async def run_outage(
    client: httpx.AsyncClient, audio: bytes, control: Control, outage_s: float, phase_s: float
) -> OutageRun:
    """before → stop → during → start → recovering → after; then every refused submit is
    retried with its Idempotency-Key and every accepted job followed to the end."""
    warm = await client.post("/v1/audio/transcriptions", files={"file": ("a.wav", audio)})
    assert warm.status_code == 200, warm.text  # decoder child and VAD loaded before timing
    load = Load(client, audio)
    workers = [
        asyncio.create_task(w()) for w in (load.sync_worker, load.submit_worker, load.read_worker)
    ]
    stopped = False
    returned = time.monotonic()
    try:
        await asyncio.sleep(phase_s)
        load.phase = "during"
        stopped = True
        await asyncio.to_thread(control.stop)
        await asyncio.sleep(outage_s)
        await asyncio.to_thread(control.start)
        stopped = False
        returned = time.monotonic()
        load.phase = "recovering"
        await asyncio.sleep(RECOVERY_S)
        load.phase = "after"
        await asyncio.sleep(phase_s)
    finally:
        load.running = False
        if stopped:  # the server must be back for whoever uses it next
            await asyncio.to_thread(control.start)
        await asyncio.gather(*workers, return_exceptions=True)
    for key in load.refused:
        response = await load.submit(key)
        assert response.status_code in (200, 202), response.text
        load.accepted[key] = response.json()["id"]
    ids = set(load.accepted.values())
    duplicated = len(load.accepted) - len(ids)
    for job_id in ids:
        await wait_succeeded(client, job_id)
    page = (await client.get("/v1/jobs", params={"limit": 200})).json()
    listed = {job["id"] for job in page["data"]}
    return OutageRun(load, returned, len(ids - listed), duplicated + len(listed - ids))


async def wait_succeeded(client: httpx.AsyncClient, job_id: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job.get("status") == "succeeded":
            return
        assert job.get("status") not in ("failed", "cancelled"), job
        await asyncio.sleep(0.3)
    raise AssertionError(f"job {job_id} not done after {timeout}s")


def model_seconds(timing: str | None) -> float:
    """The model's share of a sync answer (`chunks` in Server-Timing: batcher queue + batch)."""
    for part in (timing or "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        if name == "chunks":
            return float(dur) / 1000
    return 0.0


def summarize(name: str, run: OutageRun, peak_rss_mb: float) -> dict[str, Any]:
    outcomes = run.load.outcomes
    by_phase = {
        phase: dict(Counter(str(o.status or "timeout") for o in outcomes if o.phase == phase))
        for phase in PHASES
    }
    abnormal = [o.at for o in outcomes if o.status == 0 or o.status >= 400]
    recovery = max((at - run.returned for at in abnormal), default=0.0)
    return {
        "scenario": name,
        "statuses": by_phase,
        "answers": len(outcomes),
        "worst_latency_s": round(max((o.seconds for o in outcomes), default=0.0), 3),
        # Without the model's own time (Server-Timing `chunks`): what the outage could add.
        "worst_latency_without_model_s": round(
            max((o.seconds - model_seconds(o.timing) for o in outcomes), default=0.0), 3
        ),
        "jobs_accepted": len(run.load.accepted),
        "jobs_lost": run.lost,
        "jobs_duplicated": run.duplicated,
        "recovery_s": round(max(0.0, recovery), 3),
        "peak_rss_mb": round(peak_rss_mb, 1),
    }


class RssPeak:
    """Samples this process's RSS every 50 ms while running."""

    def __init__(self) -> None:
        self.peak = 0.0
        self.idle = psutil.Process().memory_info().rss / 2**20
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        process = psutil.Process()
        while True:
            self.peak = max(self.peak, process.memory_info().rss / 2**20)
            await asyncio.sleep(0.05)

    async def __aenter__(self) -> RssPeak:
        self._task = asyncio.ensure_future(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.after = psutil.Process().memory_info().rss / 2**20


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["# Chaos suite (issue 16)", ""]
    for result in results:
        lines += [f"## {result['scenario']}", ""]
        if "statuses" in result:
            lines += ["| phase | statuses |", "|---|---|"]
            for phase, counts in result["statuses"].items():
                shown = ", ".join(f"{n} x {s}" for s, n in sorted(counts.items())) or "-"
                lines.append(f"| {phase} | {shown} |")
            lines.append("")
        facts = {k: v for k, v in result.items() if k not in ("scenario", "statuses")}
        lines += ["| measure | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in facts.items()]
        lines.append("")
    return "\n".join(lines)


def write(results: list[dict[str, Any]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "chaos.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "chaos.md").write_text(markdown(results))


def outage_config(db_url: str, redis_url: str, s3: Any, blob_url: str, cache: Path) -> Any:
    """The stack the outage scenarios and `tests/integration/test_outages.py` run."""
    from serve_app.config import AppConfig, ModelConfig

    return AppConfig(
        models=[ModelConfig(name="tiny.en", aliases=["whisper-1"])],
        model_cache_dir=str(cache),
        storage={
            "database_url": db_url,
            "blob_url": blob_url,
            "redis_url": redis_url,
            "s3": dataclasses.asdict(s3),
        },
        jobs={
            "poll_interval_s": 0.2,
            "max_concurrent_jobs": 2,
            "retry_base_s": 0.5,
            "retry_max_s": 2,
            "max_attempts": 20,
        },
        limits={"decode_workers": 1},
        # A short key cache: the outage outlasts it, so keys must come from the stale cache.
        auth={"enabled": True, "key_cache_s": 1.0},
        # max_concurrent = the load's concurrency: one slot left behind would show as a 429.
        rate_limit={
            "enabled": True,
            "default": {"requests_per_s": 50, "burst": 50, "max_concurrent": 3},
        },
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s outages and phases")
    parser.add_argument(
        "--scenarios",
        default="postgres,redis,s3,stalled,oversize,transcriber,transcriber:2,tracker",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--model-cache", type=Path, default=None, help="default: the config's")
    args = parser.parse_args(argv)
    from benchmarks.chaos_run import run_all

    results = asyncio.run(run_all(args.scenarios.split(","), args.quick, args.model_cache))
    write(results, args.out)
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
