"""Realtime sessions: end-of-speech → completed latency at N concurrent sessions at 1x.

    python -m benchmarks.realtime [--sessions 1,8,16] [--seconds 20] [--search]
                                  [--url http://127.0.0.1:8000 --api-key …]
                                  [--out benchmarks/results]

Without `--url` the service runs in this process (`serve_app.testing.LocalStack`: the
Transcriber replica's code, batcher and packing, no Ray) behind uvicorn on a loopback port,
with the replica as the main benchmark configures it (tiny.en, int8, `cpu_threads=2`,
batch defaults). Every session is a WebSocket client of `/v1/realtime` that speaks
espeak-ng sentences (`benchmarks.clips`, 24 kHz PCM16) in 100 ms appends at 1x real time
with 0.8-1.6 s pauses, server VAD with the defaults (threshold 0.5, 300 ms prefix, 500 ms
silence); sessions start at random moments in the first two seconds.

Measured per turn, on the client's clock:
- **latency**: from `input_audio_buffer.speech_stopped` (the server saw the end of speech
  and committed the turn) to its `...transcription.completed`: the service's share;
- **from speech end**: from sending the append that holds the sentence's last voiced
  sample to `completed`: what a speaker waits, i.e. the above plus the VAD's 500 ms of
  silence (and up to 100 ms of append granularity).

A level "holds" when the senders kept 1x pace and p95 latency is under 2 s; `--search`
bisects between the largest level that held and the smallest that did not. Results:
`realtime.json` and `realtime.md` in `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import statistics
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import connect

from benchmarks.accuracy import normalise
from benchmarks.clips import DEFAULT_CACHE, Clip, generated_clips
from serve_app.client.live import read_pcm16, realtime_url

RESULTS = Path(__file__).resolve().parent / "results"
RATE = 24000
STEP = RATE // 10  # 100 ms appends
P95_GOAL_S = 2.0
P50_GOAL_S = 1.0  # at 8 sessions


@dataclass
class Turn:
    session: int
    clip: str
    reference: str
    speech_end: float  # when the append with the last voiced sample was sent
    stopped: float | None = None  # speech_stopped received
    completed: float | None = None
    transcript: str | None = None

    @property
    def latency(self) -> float | None:
        if self.stopped is None or self.completed is None:
            return None
        return self.completed - self.stopped

    @property
    def from_speech_end(self) -> float | None:
        return None if self.completed is None else self.completed - self.speech_end


@dataclass
class SessionRun:
    turns: list[Turn] = field(default_factory=list)
    max_lag_s: float = 0.0  # how far the sender fell behind 1x
    errors: list[str] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[index], 3)


def script(clips: list[tuple[Clip, np.ndarray]], seconds: float, rng: random.Random) -> list:
    """A session's audio: (pause samples, clip) pairs filling about `seconds`."""
    parts, total = [], 0.0
    while total < seconds:
        clip, pcm = rng.choice(clips)
        pause = int(rng.uniform(0.8, 1.6) * RATE)
        parts.append((pause, clip, pcm))
        total += (pause + pcm.size) / RATE
    return parts


async def run_session(
    url: str, key: str | None, index: int, parts: list, start_delay: float
) -> SessionRun:
    await asyncio.sleep(start_delay)
    run = SessionRun()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    loop = asyncio.get_running_loop()
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        pending: list[Turn] = []  # turns whose speech_stopped has not come yet
        by_item: dict[str, Turn] = {}
        done = asyncio.Event()
        expected = len(parts)

        async def reader() -> None:
            async for message in ws:
                event = json.loads(message)
                kind = event["type"]
                now = loop.time()
                if kind == "input_audio_buffer.speech_stopped" and pending:
                    turn = pending.pop(0)
                    turn.stopped = now
                    by_item[event["item_id"]] = turn
                elif kind.endswith("input_audio_transcription.completed"):
                    turn = by_item.get(event["item_id"])
                    if turn is not None:
                        turn.completed, turn.transcript = now, event["transcript"]
                    if sum(t.completed is not None for t in run.turns) >= expected:
                        done.set()
                elif kind in ("error", "conversation.item.input_audio_transcription.failed"):
                    run.errors.append(event["error"]["message"])

        reading = asyncio.ensure_future(reader())
        started = loop.time()
        sent = 0

        async def send(pcm: np.ndarray, mark: int = 0) -> float:
            """Append `pcm` at 1x; returns when the append holding sample `mark` went out."""
            nonlocal sent
            marked = loop.time()
            for start in range(0, pcm.size, STEP):
                piece = pcm[start : start + STEP]
                audio = base64.b64encode(piece.tobytes()).decode()
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
                if start <= mark < start + STEP:
                    marked = loop.time()
                sent += piece.size
                due = started + sent / RATE
                lag = loop.time() - due
                run.max_lag_s = max(run.max_lag_s, lag)
                await asyncio.sleep(max(0.0, due - loop.time()))
            return marked

        for pause, clip, pcm in parts:
            await send(np.zeros(pause, "<i2"))
            voiced = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 300)
            speech_end = await send(pcm, int(voiced[-1]) if voiced.size else pcm.size - 1)
            turn = Turn(index, clip.name, clip.reference, speech_end=speech_end)
            run.turns.append(turn)
            pending.append(turn)
        await send(np.zeros(RATE, "<i2"))  # the last turn's silence
        try:
            await asyncio.wait_for(done.wait(), 60)
        except TimeoutError:
            run.errors.append("timed out waiting for the last transcripts")
        reading.cancel()
    return run


def summarise(sessions: int, runs: list[SessionRun], wall_s: float, batches: Any) -> dict:
    import jiwer

    turns = [t for r in runs for t in r.turns]
    latencies = [t.latency for t in turns if t.latency is not None]
    waits = [t.from_speech_end for t in turns if t.from_speech_end is not None]
    pairs = [(normalise(t.reference), normalise(t.transcript or "")) for t in turns]
    refs, hyps = zip(*pairs, strict=True) if pairs else ((), ())
    lag = max((r.max_lag_s for r in runs), default=0.0)
    p95 = percentile(latencies, 95)
    return {
        "sessions": sessions,
        "turns": len(turns),
        "completed": len(latencies),
        "errors": sum(len(r.errors) for r in runs),
        "error_samples": [e for r in runs for e in r.errors][:5],
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": p95,
        "latency_max_s": round(max(latencies), 3) if latencies else None,
        "latency_mean_s": round(statistics.fmean(latencies), 3) if latencies else None,
        "from_speech_end_p50_s": percentile(waits, 50),
        "from_speech_end_p95_s": percentile(waits, 95),
        "wer": round(float(jiwer.wer(list(refs), list(hyps))), 4) if refs else None,
        "sender_max_lag_s": round(lag, 3),
        "holds": bool(
            latencies and len(latencies) == len(turns) and p95 is not None and p95 < P95_GOAL_S
        )
        and lag < 0.5,
        "wall_s": round(wall_s, 1),
        "batch_sizes": batches,
    }


@asynccontextmanager
async def local_service(sessions_max: int):
    """LocalStack + uvicorn in this loop; yields (ws url, replica or None)."""
    import uvicorn

    from serve_app.config import AppConfig, ModelConfig
    from serve_app.testing import LocalStack

    with tempfile.TemporaryDirectory() as tmp:
        config = AppConfig(
            models=[ModelConfig(name="tiny.en", aliases=["whisper-1"], cpu_threads=2)],
            storage={"database_url": f"sqlite:///{tmp}/jobs.db", "blob_url": f"file://{tmp}/b"},
            jobs={"enabled": False},
            limits={"decode_workers": 1},
            realtime={"max_sessions_per_key": sessions_max},
        )
        async with LocalStack(config) as stack:
            import socket

            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            server = uvicorn.Server(
                uvicorn.Config(
                    stack.app,
                    host="127.0.0.1",
                    port=port,
                    log_level="warning",
                    lifespan="off",
                    ws="websockets-sansio",
                )
            )
            task = asyncio.ensure_future(server.serve())
            while not server.started:
                await asyncio.sleep(0.05)
            try:
                yield f"ws://127.0.0.1:{port}/v1/realtime", stack.replicas["tiny.en"]
            finally:
                server.should_exit = True
                await task


async def run_level(
    url: str, key: str | None, sessions: int, clips: list, seconds: float, replica: Any, seed: int
) -> dict:
    rng = random.Random(seed + sessions)
    before = dict(replica.stats().batch_sizes) if replica is not None else None
    started = time.monotonic()
    runs = await asyncio.gather(
        *(
            run_session(url, key, i, script(clips, seconds, rng), rng.uniform(0, 2.0))
            for i in range(sessions)
        )
    )
    wall = time.monotonic() - started
    batches = None
    if replica is not None and before is not None:
        after = replica.stats().batch_sizes
        batches = {str(k): v - before.get(k, 0) for k, v in sorted(after.items())}
        batches = {k: v for k, v in batches.items() if v}
    result = summarise(sessions, list(runs), wall, batches)
    print(_line(result), file=sys.stderr, flush=True)
    return result


def _line(r: dict) -> str:
    return (
        f"{r['sessions']:>3} sessions: {r['completed']}/{r['turns']} turns, "
        f"p50 {r['latency_p50_s']} s, p95 {r['latency_p95_s']} s (from speech end p50 "
        f"{r['from_speech_end_p50_s']} s), WER {r['wer']}, lag {r['sender_max_lag_s']} s, "
        f"{'holds' if r['holds'] else 'does not hold'}"
    )


def markdown(report: dict) -> str:
    lines = [
        "# Realtime sessions: end of speech → completed",
        "",
        f"{report['generated_at']} · {report['target']} · {report['cpus']} CPUs · "
        f"{report['seconds_per_session']:.0f} s of audio per session · server VAD defaults",
        "",
        "| sessions | turns | p50 s | p95 s | max s | from speech end p50 / p95 s | WER | "
        "sender lag s | batch sizes | holds 1x, p95 < 2 s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in report["levels"]:
        sizes = ", ".join(f"{k}: {v}" for k, v in (r["batch_sizes"] or {}).items()) or "-"
        lines.append(
            f"| {r['sessions']} | {r['completed']}/{r['turns']} | {r['latency_p50_s']} | "
            f"{r['latency_p95_s']} | {r['latency_max_s']} | {r['from_speech_end_p50_s']} / "
            f"{r['from_speech_end_p95_s']} | {r['wer']} | {r['sender_max_lag_s']} | {sizes} | "
            f"{'yes' if r['holds'] else 'no'} |"
        )
    goal = report["goal_p50_at_8"]
    lines += [
        "",
        f"- Most sessions held at 1x with p95 < {P95_GOAL_S:.0f} s: "
        f"**{report['max_sessions_p95_under_2s']}** (of the levels run).",
        f"- Goal p50 ≤ {P50_GOAL_S:.1f} s at 8 sessions: "
        + (
            "not run"
            if goal is None
            else f"{goal['p50_s']} s, {'met' if goal['met'] else 'missed'}"
        )
        + ".",
        "- Latency = `speech_stopped` → `completed` on the client (the service's share); "
        "*from speech end* adds the VAD's 500 ms of silence (what a speaker waits).",
    ]
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace) -> dict:
    levels = sorted({int(x) for x in args.sessions.split(",") if x.strip()})
    clip_set = generated_clips(args.clips, Path(args.clip_dir))
    clips = [(c, read_pcm16(c.path, RATE)) for c in clip_set]
    results: list[dict] = []

    async def measure(url: str, replica: Any) -> None:
        await run_level(url, args.api_key, 1, clips, 4, replica, args.seed)  # warm-up
        for n in levels:
            results.append(
                await run_level(url, args.api_key, n, clips, args.seconds, replica, args.seed)
            )
        if args.search:
            for _ in range(args.search_steps):
                held = [r["sessions"] for r in results if r["holds"]]
                failed = [r["sessions"] for r in results if not r["holds"]]
                low = max(held, default=0)
                high = min((n for n in failed if n > low), default=None)
                if high is None or high - low <= 1:
                    break
                mid = (low + high) // 2
                results.append(
                    await run_level(url, args.api_key, mid, clips, args.seconds, replica, args.seed)
                )

    if args.url:
        await measure(realtime_url(args.url), None)
        target = args.url
    else:
        async with local_service(max(levels) + 1) as (url, replica):
            await measure(url, replica)
        target = "in-process LocalStack (tiny.en int8, cpu_threads=2)"
    results.sort(key=lambda r: r["sessions"])
    at_8 = next((r for r in results if r["sessions"] == 8), None)
    held = [r["sessions"] for r in results if r["holds"]]
    return {
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "target": target,
        "cpus": os.cpu_count(),
        "seconds_per_session": args.seconds,
        "clips": len(clip_set),
        "levels": results,
        "max_sessions_p95_under_2s": max(held, default=0),
        "goal_p50_at_8": None
        if at_8 is None or at_8["latency_p50_s"] is None
        else {"p50_s": at_8["latency_p50_s"], "met": at_8["latency_p50_s"] <= P50_GOAL_S},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", default="1,8,16", help="concurrency levels")
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per session")
    parser.add_argument("--search", action="store_true", help="bisect the most sessions held")
    parser.add_argument("--search-steps", type=int, default=2)
    parser.add_argument("--url", default=None, help="a running service instead of in-process")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--clips", type=int, default=12, help="distinct generated sentences")
    parser.add_argument("--clip-dir", default=str(DEFAULT_CACHE))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    report = asyncio.run(main_async(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "realtime.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.out / "realtime.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
