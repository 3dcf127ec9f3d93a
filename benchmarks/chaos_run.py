"""The chaos suite's scenarios over throwaway servers (see `benchmarks/chaos.py`).

The servers are the tests' own (`tests.fixtures.services`), started once for the run; the
service is `LocalStack` over the tiny.en model, loaded once.
"""

from __future__ import annotations

import asyncio
import io
import statistics
import tempfile
import time
import uuid
import wave
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.chaos import RssPeak, outage_config, run_outage, summarize

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
STALLED = 200
KILLS = ("transcriber", "tracker")  # need Ray: benchmarks/chaos_kill.py
PART = b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'


async def outage(
    name: str, services: dict[str, Any], tiny: Any, quick: bool, cache: Path
) -> dict[str, Any]:
    """One backend stopped under load: `services` holds postgres, redis and s3 (the tests'
    `PostgresServer`, `Restartable` and `S3Server`)."""
    from serve_app.security.keys import create_key
    from serve_app.stores import open_job_store
    from serve_app.testing import LocalStack
    from tests.fixtures.services import redis_url_of

    pg, redis, s3 = services["postgres"], services["redis"], services["s3"]
    db = pg.url(pg.create_database())
    open_job_store(db, migrate=True).close()
    bucket = f"s3://chaos-{uuid.uuid4().hex[:8]}/jobs"
    config = outage_config(db, redis_url_of(redis), s3.settings, bucket, cache)
    control = {"postgres": pg.control, "redis": redis, "s3": s3.control}[name]
    audio = (DATA / "hello.wav").read_bytes()
    async with LocalStack(config, replicas={"tiny.en": tiny}) as stack, RssPeak() as rss:
        assert stack.jobs is not None
        key, _ = create_key(stack.jobs.store, "chaos", name)
        async with stack.http({"authorization": f"Bearer {key}"}) as client:
            run = await run_outage(client, audio, control, 2.0 if quick else 5.0, 2.0)
    return summarize(f"{name} stopped {2 if quick else 5} s", run, rss.peak)


async def stalled(tiny: Any, quick: bool, root: Path) -> dict[str, Any]:
    """200 uploads stall after their headers and 1 kB; probes and normal requests go on."""
    from serve_app.config import AppConfig, ModelConfig
    from serve_app.testing import LocalStack
    from tests.unit.live_support import serving

    idle_s = 2.0 if quick else 10.0
    config = AppConfig(
        models=[ModelConfig(name="tiny.en")],
        storage={"database_url": f"sqlite:///{root}/s.db", "blob_url": f"file://{root}/b"},
        jobs={"enabled": False},
        # Every socket here comes from one address: a cap above the stalled count keeps the
        # normal requests in (the cap itself is tests/integration/test_slow_clients.py's).
        limits={
            "decode_workers": 1,
            "body_idle_timeout_s": idle_s,
            "max_concurrent_uploads": STALLED + 10,
        },
    )
    audio = (DATA / "hello.wav").read_bytes()
    head = (
        b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: multipart/form-data; boundary=xx\r\nContent-Length: 10000000\r\n\r\n"
    )
    async with LocalStack(config, replicas={"tiny.en": tiny}) as stack, serving(stack.app) as ws:
        url = ws.replace("ws://", "http://")
        host, port = url.removeprefix("http://").split(":")
        async with httpx.AsyncClient(base_url=url, timeout=30) as client, RssPeak() as rss:
            await client.post("/v1/audio/transcriptions", files={"file": ("a.wav", audio)})
            idle = await _p50(client, audio)
            opened = time.monotonic()
            conns = []
            for _ in range(STALLED):
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(head + PART + b"\0" * 1000)
                conns.append((reader, writer))
            loaded = await _p50(client, audio)
            health = (await client.get("/healthz")).status_code
            statuses: dict[str, int] = {}
            for reader, writer in conns:
                try:
                    raw = await asyncio.wait_for(reader.read(200), idle_s + 3)
                    status = raw.split(b" ")[1].decode() if raw else "closed"
                except TimeoutError:
                    status = "open"
                statuses[status] = statuses.get(status, 0) + 1
                writer.close()
            freed = time.monotonic() - opened
    return {
        "scenario": f"{STALLED} stalled uploads (body_idle_timeout_s {idle_s:g})",
        "statuses": {"stalled uploads": statuses},
        "normal_p50_idle_s": round(idle, 3),
        "normal_p50_with_stalled_s": round(loaded, 3),
        "healthz_while_stalled": health,
        "all_answered_within_s": round(freed, 2),
        "peak_rss_mb": round(rss.peak, 1),
    }


async def _p50(client: httpx.AsyncClient, audio: bytes) -> float:
    took = []
    for _ in range(5):
        started = time.monotonic()
        reply = await client.post("/v1/audio/transcriptions", files={"file": ("a.wav", audio)})
        assert reply.status_code == 200, reply.text
        took.append(time.monotonic() - started)
    return statistics.median(took)


async def oversize(tiny: Any, root: Path) -> dict[str, Any]:
    """A 2 GiB Content-Length, and a chunked body that never ends, against 8 MiB uploads."""
    from serve_app.config import AppConfig, ModelConfig
    from serve_app.testing import LocalStack
    from tests.unit.live_support import serving

    limit = 8 * 2**20
    config = AppConfig(
        models=[ModelConfig(name="tiny.en")],
        storage={"database_url": f"sqlite:///{root}/o.db", "blob_url": f"file://{root}/b"},
        jobs={"enabled": False},
        limits={"decode_workers": 1, "max_upload_bytes": limit},
    )
    async with LocalStack(config, replicas={"tiny.en": tiny}) as stack, serving(stack.app) as ws:
        host, port = ws.removeprefix("ws://").split(":")
        out: dict[str, Any] = {"scenario": "oversize uploads (limit 8 MiB)"}
        async with RssPeak() as rss:
            reader, writer = await asyncio.open_connection(host, int(port))
            started = time.monotonic()
            writer.write(
                b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: multipart/form-data; boundary=xx\r\n"
                + f"Content-Length: {2 * 1024**3}\r\n\r\n".encode()
            )
            raw = await asyncio.wait_for(reader.read(200), 5)
            writer.close()
            out["declared_2GiB_status"] = raw.split(b" ")[1].decode()
            out["declared_2GiB_answer_s"] = round(time.monotonic() - started, 3)
            out["chunked_pushed_mb"], out["chunked_status"] = await _endless(host, int(port))
        out["refused_rss_idle_mb"] = round(rss.idle, 1)
        out["refused_rss_peak_mb"] = round(rss.peak, 1)
        # 8 concurrent uploads just under the limit (silence: decoded, no speech to decode).
        audio = _silence_wav(limit - 64 * 1024)
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=120) as client:
            # First 8 max-size bodies that are read whole, then refused (text, 415): what
            # the uploads alone cost, before any decoding.
            text = b"x" * (limit - 64 * 1024)
            async with RssPeak() as bodies:
                files = [{"file": ("a.txt", text)} for _ in range(8)]
                refused = await asyncio.gather(
                    *(client.post("/v1/audio/transcriptions", files=f) for f in files)
                )
            out["eight_bodies_statuses"] = sorted({r.status_code for r in refused})
            out["eight_bodies_rss_peak_over_idle_mb"] = round(bodies.peak - bodies.idle, 1)
            async with RssPeak() as eight:
                files = [{"file": ("a.wav", audio)} for _ in range(8)]
                replies = await asyncio.gather(
                    *(client.post("/v1/audio/transcriptions", files=f) for f in files)
                )
            await asyncio.sleep(1.0)
            settled = psutil.Process().memory_info().rss / 2**20
        out["eight_max_statuses"] = sorted({r.status_code for r in replies})
        out["eight_max_rss_idle_mb"] = round(eight.idle, 1)
        out["eight_max_rss_peak_mb"] = round(eight.peak, 1)
        bound = 1.5 * eight.idle + 8 * limit / 2**20
        out["eight_max_bound_mb"] = round(bound, 1)
        out["eight_max_within_bound"] = eight.peak <= bound
        out["eight_max_rss_after_1s_mb"] = round(settled, 1)
    return out


def _silence_wav(size: int) -> bytes:
    frames = (size - 44) // 2
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(b"\0\0" * frames)
    return out.getvalue()


async def _endless(host: str, port: int) -> tuple[float, str]:
    """Push a chunked multipart body in 1 MiB chunks until the server answers."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: multipart/form-data; boundary=xx\r\n\r\n"
    )
    writer.write(f"{len(PART):x}\r\n".encode() + PART + b"\r\n")
    chunk = b"\0" * 2**20
    pushed = 0
    status = "none"
    read = asyncio.ensure_future(reader.read(200))
    while pushed < 512 * 2**20 and not read.done():
        try:
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
        except (ConnectionError, OSError):
            break
        pushed += len(chunk)
    raw = await asyncio.wait_for(read, 5)
    status = raw.split(b" ")[1].decode() if raw else "closed"
    writer.close()
    return round(pushed / 2**20, 1), status


async def run_all(names: list[str], quick: bool, cache: Path | None) -> list[dict[str, Any]]:
    from serve_app.config import AppConfig, ModelConfig
    from serve_app.testing import load_replica
    from tests.fixtures.services import postgres_service, redis_service, s3_service

    cache = cache or AppConfig().cache_path  # bundled weights are unpacked here once
    results = []
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        tiny = load_replica(ModelConfig(name="tiny.en"), cache)
        stack.callback(tiny.close)
        services: dict[str, Any] = {}
        if {"postgres", "redis", "s3"} & set(names):
            services["postgres"] = stack.enter_context(postgres_service())
            services["redis"] = stack.enter_context(redis_service())
            services["s3"] = stack.enter_context(s3_service())
        kills = [name for name in names if name.partition(":")[0] in KILLS]
        for name in names:
            if name in kills:
                continue  # after the rest, in a Ray started for them
            if name in ("postgres", "redis", "s3"):
                results.append(await outage(name, services, tiny, quick, cache))
            elif name == "stalled":
                results.append(await stalled(tiny, quick, Path(tmp)))
            elif name == "oversize":
                results.append(await oversize(tiny, Path(tmp)))
            else:
                raise SystemExit(f"unknown scenario {name!r}")
        if kills:
            from benchmarks.chaos_kill import kill_scenarios

            results += await kill_scenarios(kills, cache, Path(tmp), 2.0 if quick else 5.0)
    return results
