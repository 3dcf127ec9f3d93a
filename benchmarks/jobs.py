"""Durable-job benchmarks: submit latency at a fixed rate, and a many-client drain.

Planned API: `POST /v1/jobs` (multipart `file` + `model`) → 202 `{"id", "status", ...}`;
`GET /v1/jobs/{id}` → `status` in queued|running|succeeded|failed|cancelled;
`DELETE /v1/jobs/{id}` cancels. A 404/405 on the submit route means the API is not there:
the sections are reported as skipped, never as a failure of the run.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from benchmarks.clips import Clip, unique_wav
from benchmarks.loadgen import RequestRecord, latency_summary, make_client, open_loop

JOBS_PATH = "/v1/jobs"
TERMINAL = {"succeeded", "failed", "cancelled"}
SKIPPED = {"skipped": "jobs API not available"}


async def probe(base_url: str) -> bool:
    """True when the job API answers; an empty multipart POST gets 4xx but not 404/405."""
    async with make_client(base_url, 2, timeout_s=30) as client:
        try:
            response = await client.post(JOBS_PATH, files={"model": (None, "x")})
        except httpx.HTTPError:
            return False
    return response.status_code not in (404, 405)


async def _submit(
    client: httpx.AsyncClient, clip: Clip, index: int, model: str, phase_start: float
) -> tuple[RequestRecord, str | None]:
    started = time.perf_counter()
    status, error, job_id = 0, None, None
    try:
        response = await client.post(
            JOBS_PATH,
            files={"file": (f"job{index}.wav", unique_wav(clip.data, index))},
            data={"model": model},
        )
        status = response.status_code
        if response.is_success:
            job_id = response.json().get("id")
        else:
            error = response.text[:300]
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    return RequestRecord.answered(clip, phase_start, started, status, error), job_id


def _submit_summary(records: list[RequestRecord], wall_s: float) -> dict[str, Any]:
    codes: dict[str, int] = {}
    for r in records:
        codes[str(r.status)] = codes.get(str(r.status), 0) + 1
    errors = [r.error for r in records if r.error][:5]
    return {
        "submitted": len(records),
        "accepted": sum(r.status == 202 for r in records),
        "status_codes": codes,
        "wall_s": round(wall_s, 3),
        "achieved_rate": round(len(records) / wall_s, 2) if wall_s else None,
        "latency_s": latency_summary([r.latency_s for r in records if r.ok]),
        "sample_errors": errors,
    }


async def submit_at_rate(
    base_url: str, clip: Clip, model: str, rate: float, duration_s: float, first_index: int = 0
) -> tuple[dict[str, Any], list[str]]:
    """Open-loop job submissions; returns the latency summary and the accepted ids."""
    ids: list[str] = []
    async with make_client(base_url, 256, timeout_s=120) as client:

        async def send(i: int, phase_start: float) -> RequestRecord:
            record, job_id = await _submit(client, clip, first_index + i, model, phase_start)
            if job_id:
                ids.append(job_id)
            return record

        phase = await open_loop(rate, duration_s, send)
    summary = _submit_summary(phase.records, phase.wall_s)
    summary.update({"target_rate": rate, "duration_s": duration_s})
    return summary, ids


async def cancel_all(base_url: str, ids: list[str]) -> dict[str, int]:
    """Best-effort cancel (keeps a submit-latency backlog from delaying later phases)."""
    codes: dict[str, int] = {}
    sem = asyncio.Semaphore(16)
    async with make_client(base_url, 16, timeout_s=60) as client:

        async def one(job_id: str) -> None:
            async with sem:
                try:
                    status = (await client.delete(f"{JOBS_PATH}/{job_id}")).status_code
                except httpx.HTTPError:
                    status = 0
                codes[str(status)] = codes.get(str(status), 0) + 1

        await asyncio.gather(*(one(i) for i in ids))
    return codes


async def wait_terminal(
    base_url: str, ids: list[str], timeout_s: float, poll_s: float = 2.0
) -> dict[str, dict[str, Any]]:
    """Poll every unfinished job until all are terminal or the timeout passes.

    Returns id → {"status", "seen_at_s"}; status "lost" for a 404, "unfinished" at timeout.
    """
    state: dict[str, dict[str, Any]] = {}
    pending = list(ids)
    started = time.perf_counter()
    sem = asyncio.Semaphore(8)
    async with make_client(base_url, 8, timeout_s=60) as client:

        async def one(job_id: str) -> None:
            async with sem:
                try:
                    response = await client.get(f"{JOBS_PATH}/{job_id}")
                except httpx.HTTPError:
                    return
            if response.status_code == 404:
                state[job_id] = {"status": "lost"}
            elif response.is_success:
                status = response.json().get("status")
                if status in TERMINAL:
                    state[job_id] = {"status": status}
            if job_id in state:
                state[job_id]["seen_at_s"] = round(time.perf_counter() - started, 2)

        while pending and time.perf_counter() - started < timeout_s:
            await asyncio.gather(*(one(i) for i in pending))
            pending = [i for i in pending if i not in state]
            if pending:
                await asyncio.sleep(poll_s)
    for job_id in pending:
        state[job_id] = {"status": "unfinished"}
    return state


def _outcomes(state: dict[str, dict[str, Any]]) -> dict[str, int]:
    out = {k: 0 for k in ("succeeded", "failed", "cancelled", "lost", "unfinished")}
    for entry in state.values():
        out[entry["status"]] = out.get(entry["status"], 0) + 1
    return out


async def drain(
    base_url: str,
    clip: Clip,
    model: str,
    clients: int,
    jobs_per_client: int,
    timeout_s: float,
    first_index: int = 1_000_000,
) -> dict[str, Any]:
    """`clients` clients each submit `jobs_per_client` jobs back to back, then wait for all."""
    records: list[RequestRecord] = []
    ids: list[str] = []
    async with make_client(base_url, clients + 2, timeout_s=120) as client:
        phase_start = time.perf_counter()

        async def worker(w: int) -> None:
            for j in range(jobs_per_client):
                index = first_index + w * jobs_per_client + j
                record, job_id = await _submit(client, clip, index, model, phase_start)
                records.append(record)
                if job_id:
                    ids.append(job_id)

        await asyncio.gather(*(worker(w) for w in range(clients)))
        submitted_s = time.perf_counter() - phase_start
    state = await wait_terminal(base_url, ids, timeout_s)
    total_s = time.perf_counter() - phase_start
    outcomes = _outcomes(state)
    never_accepted = len(records) - len(ids)
    return {
        "clients": clients,
        "jobs_per_client": jobs_per_client,
        "submit": _submit_summary(records, submitted_s),
        "outcomes": outcomes,
        "not_accepted": never_accepted,
        "lost_or_failed": outcomes["lost"]
        + outcomes["failed"]
        + outcomes["unfinished"]
        + never_accepted,
        "drain_s": round(total_s, 2),
        "jobs_per_s": round(len(ids) / total_s, 3) if total_s else None,
        "audio_s": round(len(ids) * clip.duration, 1),
    }
