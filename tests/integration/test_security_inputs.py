"""Untrusted input on the real stack: upload caps with bounded memory, content sniffing,
crafted files, and the SSRF guard for URL inputs and webhooks (loopback canaries only)."""

from __future__ import annotations

import os
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import wait_job
from tests.integration.test_security_helpers import (
    Canary,
    SecurityApp,
    deploy_security_app,
    ingress_process,
)

pytestmark = pytest.mark.integration

UPLOAD_CAP = 4 * 1024 * 1024
DURATION_CAP_S = 30.0  # story.flac is 43 s


@pytest.fixture(scope="module")
def canary() -> Iterator[Canary]:
    """Must never see a connection: every URL aimed at it has to be refused first."""
    server = Canary(files={"/a.wav": b"RIFF"}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def relay(canary: Canary, data_dir: Path) -> Iterator[Canary]:
    """Allowlisted (stands in for a public server): serves audio, or redirects to the canary."""
    loop6 = f"http://[::1]:{canary.port}/a.wav"
    server = Canary(
        files={
            "/direct.wav": (data_dir / "hello.wav").read_bytes(),
            "/huge.wav": b"\1" * (UPLOAD_CAP + 1),
        },
        redirects={
            "/to-canary": f"{canary.base}/a.wav",
            "/to-localhost": f"http://localhost:{canary.port}/a.wav",
            "/to-v6": loop6,
            "/to-decimal": f"http://2130706433:{canary.port}/a.wav",
            "/to-file": "file:///etc/passwd",
        },
        slow={"/slow.wav"},
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def app(request, ray_instance, model_cache, relay: Canary) -> Iterator[SecurityApp]:
    overrides = {
        "auth": {"enabled": True},
        "limits": {"max_upload_bytes": UPLOAD_CAP, "max_audio_duration_s": DURATION_CAP_S},
        "jobs": {
            "allow_private_urls": False,
            "url_allowlist": [f"127.0.0.1:{relay.port}"],
            "url_fetch_timeout_s": 3.0,
        },
    }
    yield from deploy_security_app(request, ray_instance, model_cache, "sec-input", overrides)


@pytest.fixture(scope="module")
def key(app: SecurityApp) -> str:
    return app.create_key("tenant-input", "input")


def _post_audio(client, content: bytes, name: str = "audio.wav"):
    files = {"file": (name, content, "audio/wav")}
    return client.post("/v1/audio/transcriptions", files=files)


def _temp_fds(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/tmp/") or "(deleted)" in target:
            found.add(f"{fd}->{target}")
    return found


def _chunked_upload(client, total: int):
    """A multipart body without Content-Length, sent at about 50 MB/s (400 Mbit/s).

    Paced because Ray Serve's proxy forwards body chunks to the replica without
    backpressure: from an unthrottled loopback client a replica may prefetch whatever the
    proxy already read before the 413 goes out (see README, Security).
    """

    def chunked():
        yield (
            b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\n"
        )
        piece = b"\1" * (256 * 1024)
        for _ in range(total // len(piece)):
            yield piece
            time.sleep(0.005)

    return client.post(
        "/v1/audio/transcriptions",
        content=chunked(),
        headers={"content-type": "multipart/form-data; boundary=x"},
    )


def test_ten_times_oversized_chunked_upload_gets_413_with_bounded_memory(app, key):
    proc = ingress_process(app.name)
    total = UPLOAD_CAP * 10
    with app.client(key) as client:  # warm the replica's allocator and parsers first
        assert _chunked_upload(client, total).status_code == 413
    fds_before = _temp_fds(proc.pid)
    baseline = proc.memory_info().rss
    peak = baseline
    sampling = True

    def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with app.client(key) as client:
            response = _chunked_upload(client, total)
    finally:
        sampling = False
        sampler.join()
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"
    growth = peak - baseline
    assert growth < total / 4, f"ingress RSS grew {growth / 2**20:.1f} MiB for a 40 MiB body"
    deadline = time.monotonic() + 10
    while _temp_fds(proc.pid) - fds_before and time.monotonic() < deadline:
        time.sleep(0.2)  # spooled parts are closed when the aborted request is collected
    assert not _temp_fds(proc.pid) - fds_before
    with app.client(key) as client:
        assert client.get("/v1/jobs").status_code == 200


def test_audio_over_the_duration_cap_gets_413(app, key, data_dir):
    with app.client(key) as client:
        response = _post_audio(client, (data_dir / "story.flac").read_bytes(), "story.flac")
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "audio_too_long"
        story = (data_dir / "story.flac").read_bytes()
        job = client.post("/v1/jobs", files={"file": ("story.flac", story)})
        assert job.status_code == 202, job.text
        failed = wait_job(client, job.json()["id"])
        assert failed["status"] == "failed" and "limit" in failed["error"]


@pytest.mark.parametrize(
    "payload",
    [
        b"<!DOCTYPE html><html><body>not audio</body></html>",
        b"  <html><script>alert(1)</script></html>",
        b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://127.0.0.1:9/seg.ts\n",
        b'{"audio": "no"}',
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj",
        b"just some plain text that happens to be named .wav\n" * 20,
    ],
    ids=["html", "html-leading-space", "hls", "json", "pdf", "plain-text"],
)
def test_text_named_wav_is_refused(app, key, payload):
    with app.client(key) as client:
        response = _post_audio(client, payload, "song.wav")
        assert response.status_code in (415, 422), response.text
        if not payload.startswith(b"just"):  # sniffed: refused before a job exists
            response = client.post("/v1/jobs", files={"file": ("song.wav", payload, "audio/wav")})
            assert response.status_code == 415, response.text


def _wav_header(data_bytes: int, rate: int = 16000) -> bytes:
    """A 16-bit mono RIFF header whose data chunk promises `data_bytes`."""
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    riff = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
    return riff + fmt + b"data" + struct.pack("<I", data_bytes)


def _silent_flac(tmp_path: Path, seconds: int) -> bytes:
    path = tmp_path / "silence.flac"
    subprocess.run(
        ["sox", "-n", "-r", "16000", "-c", "1", str(path), "trim", "0", str(seconds)], check=True
    )
    return path.read_bytes()


def test_crafted_files_fail_fast_and_the_service_keeps_serving(app, key, data_dir, tmp_path):
    crafted = {
        "wav-promising-an-hour": _wav_header(16000 * 2 * 3600) + b"\0" * 4096,
        "wav-promising-20s": _wav_header(16000 * 2 * 20) + b"\0" * 4096,
        "wav-with-absurd-chunk": _wav_header(0)[:12] + b"fmt " + b"\xff" * 4 + b"\0" * 64,
        "flac-garbage": b"fLaC" + os.urandom(20000),
        "ogg-garbage": b"OggS" + os.urandom(20000),
        "mp3-garbage": b"ID3\x04\0\0\0\0\0\x0a" + os.urandom(20000),
        "silent-hour-flac": _silent_flac(tmp_path, 3600),  # 200 KB that decodes to 230 MB
        "truncated-wav": (data_dir / "train.wav").read_bytes()[:20000],
    }
    with app.client(key, timeout=90) as client:
        for name, payload in crafted.items():
            started = time.monotonic()
            response = _post_audio(client, payload, f"{name}.bin")
            assert 400 <= response.status_code < 500, (name, response.text)
            assert time.monotonic() - started < 60, name
        response = _post_audio(client, (data_dir / "hello.wav").read_bytes(), "hello.wav")
        assert response.status_code == 200 and "hello" in response.json()["text"].lower()


def test_ssrf_targets_are_refused_without_touching_the_canary(app, key, canary, relay):
    port = canary.port
    targets = [
        f"http://127.0.0.1:{port}/a.wav",
        f"http://localhost:{port}/a.wav",
        f"http://[::1]:{port}/a.wav",
        f"http://[::ffff:127.0.0.1]:{port}/a.wav",
        f"http://2130706433:{port}/a.wav",  # = 127.0.0.1
        f"http://0x7f.1:{port}/a.wav",
        f"http://017700000001:{port}/a.wav",  # octal
        f"http://127.1:{port}/a.wav",
        f"http://0.0.0.0:{port}/a.wav",
        "file:///etc/passwd",
        f"ftp://127.0.0.1:{port}/a.wav",
        f"gopher://127.0.0.1:{port}/_",
        f"{relay.base}/to-canary",  # an allowed server redirecting to loopback
        f"{relay.base}/to-localhost",
        f"{relay.base}/to-v6",
        f"{relay.base}/to-decimal",
        f"{relay.base}/to-file",
    ]
    with app.client(key) as client:
        for url in targets:
            response = client.post("/v1/jobs", json={"url": url})
            assert response.status_code == 400, (url, response.text)
        for hook in (f"http://127.0.0.1:{port}/hook", f"http://[::1]:{port}/hook"):
            with (Path(__file__).parents[1] / "data" / "hello.wav").open("rb") as audio:
                response = client.post(
                    "/v1/jobs", files={"file": audio}, data={"webhook_url": hook}
                )
            assert response.status_code == 400, (hook, response.text)
    assert canary.connections == [], canary.paths
    assert {"/to-canary", "/to-localhost", "/to-v6", "/to-decimal", "/to-file"} <= set(relay.paths)


def test_url_inputs_are_capped_in_size_and_time(app, key, relay):
    with app.client(key) as client:
        accepted = client.post("/v1/jobs", json={"url": f"{relay.base}/direct.wav"})
        assert accepted.status_code == 202, accepted.text  # the allowlisted server is usable
        huge = client.post("/v1/jobs", json={"url": f"{relay.base}/huge.wav"})
        assert huge.status_code == 413, huge.text
        started = time.monotonic()
        slow = client.post("/v1/jobs", json={"url": f"{relay.base}/slow.wav"})
        assert slow.status_code == 400 and "longer" in slow.json()["error"]["message"]
        assert time.monotonic() - started < 30
        assert wait_job(client, accepted.json()["id"])["status"] == "succeeded"


def test_hostile_strings_are_client_errors(app, key, data_dir):
    """NUL bytes and odd ids must be 4xx (Postgres refuses NUL in text and jsonb)."""
    hello = (data_dir / "hello.wav").read_bytes()
    with app.client(key) as client:
        for path in ("/v1/jobs/%00", "/v1/jobs/a%00b/result", "/v1/jobs/..%2F..%2Fetc"):
            assert client.get(path).status_code == 404, path
        assert client.delete("/v1/jobs/%00").status_code == 404
        assert client.get("/v1/jobs", params={"after": "\x00"}).status_code in (400, 404)
        hostile = [
            {"json": {"url": "http://127.0.0.1:9/\x00"}},
            {"json": {"url": "http://127.0.0.1:9/a", "metadata": {"k": "\x00"}}},
            {"files": {"file": ("a.wav", hello)}, "data": {"prompt": "a\x00b"}},
            {"files": {"file": ("a.wav", hello)}, "data": {"metadata": '{"k": "\\u0000"}'}},
            {"files": {"file": ("a.wav", hello)}, "data": {"language": "e\x00"}},
        ]
        for request in hostile:
            response = client.post("/v1/jobs", **request)
            assert 400 <= response.status_code < 500, (request.get("data"), response.text)
