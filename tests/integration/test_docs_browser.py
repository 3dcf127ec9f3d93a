"""`/docs` and `/redoc` in headless Chromium with nothing reachable but loopback.

FastAPI's default pages pull Swagger UI and ReDoc from a CDN and render blank offline; the
service serves the assets itself (`serve_app.http.docs`). Chromium resolves no host name but
127.0.0.1 here, so a page that still needed the internet would list nothing. The Swagger
screenshot is saved as docs/api-docs.png (the README shows it).
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from browser import screenshot  # noqa: E402  (a script module, found through sys.path)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OPERATIONS = [
    "/v1/audio/transcriptions",
    "/v1/audio/translations",
    "/v1/jobs",
    "/v1/jobs/{job_id}",
    "/v1/jobs/{job_id}/result",
    "/v1/jobs/{job_id}/events",
]


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium")
    assert found, "Debian's chromium is missing: run `make system-deps`"
    return found


def _only_loopback(urls: list[str]) -> list[str]:
    return [u for u in urls if urlsplit(u).hostname not in ("127.0.0.1", None)]


def test_swagger_ui_lists_the_operations_offline(whisper_app, chromium) -> None:
    out = ROOT / "docs" / "api-docs.png"
    page = asyncio.run(
        screenshot(f"{whisper_app.url}/docs", out, ["Cancel a queued", *OPERATIONS], chromium, 90)
    )
    assert page["missing"] == [], page["text"][:2000]
    assert "DELETE" in page["text"] and "POST" in page["text"]
    assert page["failed"] == [] and _only_loopback(page["requests"]) == []
    assert any(u.endswith("/docs/assets/swagger-ui-bundle.js") for u in page["requests"])
    header = out.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert width >= 1200 and height >= 600


def test_redoc_renders_offline(whisper_app, chromium, tmp_path: Path) -> None:
    page = asyncio.run(
        screenshot(f"{whisper_app.url}/redoc", tmp_path / "redoc.png", OPERATIONS, chromium, 90)
    )
    assert page["missing"] == [], page["text"][:2000]
    assert page["failed"] == [] and _only_loopback(page["requests"]) == []
