"""asyncio + httpx load generator: closed loop (fixed concurrency) or open loop (fixed rate).

Every request records its latency, HTTP status, the seconds of audio it carried and, when
the service sends a `Server-Timing` header, the server's time per phase (ms). Only
loopback or user-given URLs are contacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from benchmarks.clips import Clip

TRANSCRIBE_PATH = "/v1/audio/transcriptions"
# The order the service's phases run in; any other phase a server sends is kept after these.
PHASES = ("read", "decode", "vad", "language", "queue", "batch", "assemble", "render", "total")


def parse_server_timing(header: str | None) -> dict[str, float] | None:
    """`read;dur=1.2, vad;dur=12.0, ...` → {"read": 1.2, "vad": 12.0}; None without a header.

    Metrics without a numeric `dur` are skipped; a repeated name adds up.
    """
    if not header:
        return None
    out: dict[str, float] = {}
    for metric in header.split(","):
        name, *params = (p.strip() for p in metric.split(";"))
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "dur" and name:
                with contextlib.suppress(ValueError):
                    out[name] = out.get(name, 0.0) + float(value.strip().strip('"'))
    return out


@dataclass
class RequestRecord:
    """One request as the client saw it."""

    clip: str
    audio_s: float
    start_s: float  # from the start of the phase
    latency_s: float
    status: int  # HTTP status; 0 when the request never got an answer
    error: str | None = None
    text: str | None = None
    phases: dict[str, float] | None = None  # Server-Timing, ms per phase

    @classmethod
    def answered(
        cls,
        clip: Clip,
        phase_start: float,
        started: float,
        status: int,
        error: str | None = None,
        text: str | None = None,
        phases: dict[str, float] | None = None,
    ) -> RequestRecord:
        """The record of `clip`, sent at `started` (perf_counter) and answered just now."""
        return cls(
            clip=clip.name,
            audio_s=clip.duration,
            start_s=started - phase_start,
            latency_s=time.perf_counter() - started,
            status=status,
            error=error,
            text=text,
            phases=phases,
        )

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("text")
        return out


@dataclass
class PhaseResult:
    """All requests of one load phase and its wall time (first send to last answer)."""

    records: list[RequestRecord]
    wall_s: float

    @property
    def ok_audio_s(self) -> float:
        return sum(r.audio_s for r in self.records if r.ok)

    @property
    def rtfx(self) -> float:
        return self.ok_audio_s / self.wall_s if self.wall_s > 0 else 0.0


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def latency_summary(values: Sequence[float]) -> dict[str, float | None]:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 4)

    return {
        "p50": r(percentile(values, 50)),
        "p95": r(percentile(values, 95)),
        "p99": r(percentile(values, 99)),
        "mean": r(sum(values) / len(values)) if values else None,
        "max": r(max(values)) if values else None,
        "n": len(values),
    }


def timed_count(records: Sequence[RequestRecord]) -> int:
    """Successful records that carried a Server-Timing header."""
    return sum(1 for r in records if r.ok and r.phases)


def phase_p50(records: Sequence[RequestRecord]) -> dict[str, float | None]:
    """p50 per Server-Timing phase (ms) over the successful records that sent one."""
    timed = [r.phases for r in records if r.ok and r.phases]
    names = [p for p in PHASES if any(p in t for t in timed)]
    names += sorted({p for t in timed for p in t} - set(names))
    out: dict[str, float | None] = {}
    for name in names:
        value = percentile([t[name] for t in timed if name in t], 50)
        out[name] = None if value is None else round(value, 1)
    return out


def make_client(base_url: str, connections: int, timeout_s: float = 600.0) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits, trust_env=False)


async def transcribe_once(
    client: httpx.AsyncClient,
    clip: Clip,
    model: str,
    phase_start: float,
    fields: dict[str, str] | None = None,
) -> RequestRecord:
    """POST one clip to the OpenAI-compatible route (plus form `fields`); never raises."""
    started = time.perf_counter()
    status, error, text, phases = 0, None, None, None
    try:
        response = await client.post(
            TRANSCRIBE_PATH,
            files={"file": (clip.name, clip.data)},
            data={"model": model, "response_format": "json", **(fields or {})},
        )
        status = response.status_code
        phases = parse_server_timing(response.headers.get("server-timing"))
        if response.is_success:
            text = response.json().get("text", "")
        else:
            error = response.text[:300]
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    return RequestRecord.answered(clip, phase_start, started, status, error, text, phases)


async def closed_loop(
    base_url: str, clips: Sequence[Clip], concurrency: int, model: str
) -> PhaseResult:
    """`concurrency` clients, each sending its next request as soon as the last one answered.

    The clips are sent in order (each exactly once); the phase ends when all answered.
    """
    queue = iter(enumerate(clips))
    records: list[RequestRecord | None] = [None] * len(clips)
    async with make_client(base_url, concurrency + 2) as client:
        phase_start = time.perf_counter()

        async def worker() -> None:
            for index, clip in queue:  # a shared iterator: no two workers take one clip
                records[index] = await transcribe_once(client, clip, model, phase_start)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - phase_start
    return PhaseResult([r for r in records if r is not None], wall)


async def open_loop(
    rate: float,
    duration_s: float,
    send: Callable[[int, float], Awaitable[RequestRecord]],
) -> PhaseResult:
    """Start `send(i, phase_start)` at fixed intervals (rate per second) for `duration_s`.

    Sends do not wait for earlier answers, so a slow server builds a backlog instead of
    slowing the arrivals down (no coordinated omission).
    """
    total = max(1, round(rate * duration_s))
    phase_start = time.perf_counter()
    tasks: list[asyncio.Task[RequestRecord]] = []
    for i in range(total):
        delay = phase_start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(send(i, phase_start)))
    records = list(await asyncio.gather(*tasks))
    return PhaseResult(records, time.perf_counter() - phase_start)


async def open_loop_transcribe(
    base_url: str, clips: Sequence[Clip], rate: float, duration_s: float, model: str
) -> PhaseResult:
    """Open-loop sync transcriptions: clips cycled at `rate` requests per second."""
    cycle = list(itertools.islice(itertools.cycle(clips), max(1, round(rate * duration_s))))
    async with make_client(base_url, 256) as client:

        async def send(i: int, phase_start: float) -> RequestRecord:
            return await transcribe_once(client, cycle[i], model, phase_start)

        return await open_loop(rate, duration_s, send)


def requests_for_level(clips: Sequence[Clip], concurrency: int, per_client: int = 2) -> list[Clip]:
    """Whole passes over the clip set, at least `per_client` requests per client.

    Whole passes keep the audio mix identical to the baselines' single pass.
    """
    rounds = max(1, math.ceil(per_client * concurrency / len(clips)))
    return list(clips) * rounds


async def sequential(base_url: str, clip: Clip, reps: int, model: str) -> PhaseResult:
    """One client sending the same clip `reps` times (1-client latency)."""
    return await closed_loop(base_url, [clip] * reps, 1, model)
