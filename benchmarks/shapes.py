"""Shapes of work against a running service: bursts, one long recording (sync and as a job),
and interactive clients while a long job runs.

Every function takes the base URL, runs one shape and returns a plain dict (walls, the
inputs of the ratios, per-request records); `benchmarks.targets.targets` turns them into
ratios against the baselines measured in the same run.

* burst: all clips sent at once (`asyncio.gather` over one client with a connection per
  clip), repeated; packed (the default) and `pack=false` alternate so drifting load hits
  both modes alike.
* long_sync: one `POST /v1/audio/transcriptions` (response_format=json) of the recording.
* long_job: `POST /v1/jobs` (multipart), then `GET /v1/jobs/{id}` every 0.1 s until
  succeeded; the wall ends at the poll that saw it succeed. The transcript is fetched after.
* mixed: a long job starts; once it is running, closed-loop clients send the short clip
  until the job succeeds.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import httpx

from benchmarks.clips import Clip, unique_wav
from benchmarks.jobs import JOBS_PATH, TERMINAL
from benchmarks.loadgen import (
    RequestRecord,
    latency_summary,
    make_client,
    phase_p50,
    timed_count,
    transcribe_once,
)

BURST_MODES: dict[str, dict[str, str]] = {"packed": {}, "unpacked": {"pack": "false"}}
POLL_S = 0.1


def _errors(records: list[RequestRecord]) -> list[str]:
    return [f"{r.status}: {r.error}" for r in records if not r.ok][:5]


def _summary(records: list[RequestRecord]) -> dict[str, Any]:
    ok = [r for r in records if r.ok]
    return {
        "requests": len(records),
        "errors": len(records) - len(ok),
        "latency_s": latency_summary([r.latency_s for r in ok]),
        "phases_p50_ms": phase_p50(records),
        "timed": timed_count(records),
        "sample_errors": _errors(records),
    }


async def burst(
    base_url: str, clips: list[Clip], model: str, repeats: int, modes: tuple[str, ...] = ()
) -> dict[str, Any]:
    """`repeats` bursts per mode of all `clips` at once; walls from first send to last answer."""
    modes = modes or tuple(BURST_MODES)
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    records: dict[str, list[RequestRecord]] = {m: [] for m in modes}
    texts: dict[str, dict[str, str]] = {m: {} for m in modes}
    async with make_client(base_url, max(16, len(clips)) + 2) as client:
        for rep in range(repeats):
            order = modes if rep % 2 == 0 else tuple(reversed(modes))
            for mode in order:
                fields = BURST_MODES[mode]
                started = time.perf_counter()
                batch = await asyncio.gather(
                    *(transcribe_once(client, c, model, started, fields) for c in clips)
                )
                wall = time.perf_counter() - started
                runs[mode].append(
                    {
                        "repeat": rep,
                        "wall_s": round(wall, 3),
                        "errors": sum(not r.ok for r in batch),
                    }
                )
                records[mode] += batch
                if rep == 0:
                    texts[mode] = {r.clip: r.text or "" for r in batch if r.ok}
    out: dict[str, Any] = {
        "clips": [c.name for c in clips],
        "audio_s": round(sum(c.duration for c in clips), 3),
        "repeats": repeats,
        "modes": {},
    }
    for mode in modes:
        walls = [r["wall_s"] for r in runs[mode] if not r["errors"]]
        out["modes"][mode] = {
            "fields": BURST_MODES[mode],
            "runs": runs[mode],
            "wall_min_s": min(walls) if walls else None,
            "wall_median_s": round(statistics.median(walls), 3) if walls else None,
            "wall_max_s": max(walls) if walls else None,
            "spread": round(max(walls) / min(walls), 3) if walls else None,
            **_summary(records[mode]),
            "texts": texts[mode],
            "records": [r.to_dict() for r in records[mode]],
        }
    return out


async def long_sync(base_url: str, clip: Clip, model: str) -> dict[str, Any]:
    """One sync transcription of the whole recording (response_format=json)."""
    async with make_client(base_url, 2, timeout_s=3600) as client:
        record = await transcribe_once(client, clip, model, time.perf_counter())
    return {
        "clip": clip.name,
        "audio_s": clip.duration,
        "wall_s": round(record.latency_s, 3) if record.ok else None,
        "status": record.status,
        "error": record.error,
        "phases_ms": record.phases,
        "text": record.text or "",
        "records": [record.to_dict()],
    }


async def _submit_job(
    client: httpx.AsyncClient, clip: Clip, model: str, index: int, timestamps: bool = False
) -> tuple[str | None, int, str | None]:
    """POST /v1/jobs with the clip made unique by `index` (the service dedupes by audio).

    `timestamps=False` decodes as the direct pipeline does by default (no timestamp tokens);
    True is the job API's default (segment times for srt, vtt and verbose_json results).
    """
    fields = {"model": model, "segment_timestamps": str(timestamps).lower()}
    try:
        response = await client.post(
            JOBS_PATH, files={"file": (clip.name, unique_wav(clip.data, index))}, data=fields
        )
    except httpx.HTTPError as exc:
        return None, 0, f"{type(exc).__name__}: {exc}"
    if response.status_code != 202:  # 200 would be a deduped (old) job: not this run's work
        return None, response.status_code, response.text[:300]
    return response.json().get("id"), response.status_code, None


async def _job_status(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    try:
        response = await client.get(f"{JOBS_PATH}/{job_id}")
    except httpx.HTTPError as exc:
        return {"status": None, "error": f"{type(exc).__name__}: {exc}"}
    if response.status_code == 404:
        return {"status": "lost"}
    if not response.is_success:
        return {"status": None, "error": f"{response.status_code} {response.text[:200]}"}
    return dict(response.json())


class _JobWatch:
    """A submitted job polled every `POLL_S`: when it ran, when it ended, how."""

    def __init__(self, client: httpx.AsyncClient, job_id: str, submitted: float) -> None:
        self.client, self.job_id, self.submitted = client, job_id, submitted
        self.running_at: float | None = None
        self.done_at: float | None = None
        self.status: str | None = None
        self.error: str | None = None
        self.running = asyncio.Event()
        self.done = asyncio.Event()

    async def poll(self, timeout_s: float) -> None:
        while time.perf_counter() - self.submitted < timeout_s:
            view = await _job_status(self.client, self.job_id)
            status = view.get("status")
            if status == "running" and self.running_at is None:
                self.running_at = time.perf_counter()
                self.running.set()
            if status in TERMINAL or status == "lost":
                self.done_at, self.status = time.perf_counter(), status
                self.error = view.get("error")
                break
            await asyncio.sleep(POLL_S)
        else:
            self.status = "unfinished"
        self.running.set()
        self.done.set()

    def result(self) -> dict[str, Any]:
        def since(t: float | None) -> float | None:
            return None if t is None else round(t - self.submitted, 3)

        ok = self.status == "succeeded"
        return {
            "id": self.job_id,
            "status": self.status,
            "error": self.error,
            "wall_s": since(self.done_at) if ok else None,
            "running_after_s": since(self.running_at),
        }


async def _transcript(client: httpx.AsyncClient, job_id: str) -> str:
    try:
        response = await client.get(f"{JOBS_PATH}/{job_id}/result", params={"format": "json"})
    except httpx.HTTPError:
        return ""
    return str(response.json().get("text", "")) if response.is_success else ""


def _job_timeout(clip: Clip) -> float:
    return max(600.0, 10 * clip.duration)


async def long_job(
    base_url: str, clip: Clip, model: str, index: int, timestamps: bool = False
) -> dict[str, Any]:
    """The recording as one job: submit, poll every 0.1 s until succeeded; wall = both."""
    async with make_client(base_url, 4, timeout_s=600) as client:
        submitted = time.perf_counter()
        job_id, status, error = await _submit_job(client, clip, model, index, timestamps)
        if job_id is None:
            return {"clip": clip.name, "submit_status": status, "error": error, "wall_s": None}
        submit_s = time.perf_counter() - submitted
        watch = _JobWatch(client, job_id, submitted)
        await watch.poll(_job_timeout(clip))
        text = await _transcript(client, job_id) if watch.status == "succeeded" else ""
    return {
        "clip": clip.name,
        "audio_s": clip.duration,
        "submit_status": status,
        "submit_s": round(submit_s, 3),
        **watch.result(),
        "text": text,
    }


async def mixed(
    base_url: str,
    long_clip: Clip,
    short: Clip,
    model: str,
    clients: int,
    index: int,
    alone_s: float = 8.0,
) -> dict[str, Any]:
    """A long job and, while it runs, `clients` closed-loop clients of the short clip.

    The same clients first run for `alone_s` with no job: what they cost each other alone
    is the floor under their latency once the job shares the machine.
    """
    records: list[RequestRecord] = []
    alone: list[RequestRecord] = []
    async with make_client(base_url, clients + 4, timeout_s=600) as client:
        alone_start = time.perf_counter()

        async def alone_worker() -> None:
            while time.perf_counter() - alone_start < alone_s:
                alone.append(await transcribe_once(client, short, model, alone_start))

        if alone_s > 0:
            await asyncio.gather(*(alone_worker() for _ in range(clients)))
        submitted = time.perf_counter()
        job_id, status, error = await _submit_job(client, long_clip, model, index)
        if job_id is None:
            return {"submit_status": status, "error": error, "job": {"wall_s": None}}
        watch = _JobWatch(client, job_id, submitted)
        poller = asyncio.ensure_future(watch.poll(_job_timeout(long_clip)))
        await watch.running.wait()
        phase_start = time.perf_counter()

        async def worker() -> None:
            while not watch.done.is_set():
                records.append(await transcribe_once(client, short, model, phase_start))

        if not watch.done.is_set():
            await asyncio.gather(*(worker() for _ in range(clients)))
        await poller
        load_s = time.perf_counter() - phase_start
        text = await _transcript(client, job_id) if watch.status == "succeeded" else ""
    return {
        "clients": clients,
        "short_clip": short.name,
        "job": {"clip": long_clip.name, "audio_s": long_clip.duration, **watch.result()},
        "job_text": text,
        "interactive": _summary(records),
        "interactive_alone": _summary(alone),
        "interactive_load_s": round(load_s, 3),
        "records": [r.to_dict() for r in records],
    }
