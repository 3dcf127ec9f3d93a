"""Helpers of the job API tests: submit one audio file as a multipart job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx


async def submit(
    client: httpx.AsyncClient,
    audio: Path | bytes,
    *,
    headers: dict[str, str] | None = None,
    **data: Any,
) -> httpx.Response:
    if isinstance(audio, Path):
        name, content = audio.name, audio.read_bytes()
    else:
        name, content = "audio.wav", audio
    return await client.post(
        "/v1/jobs", files={"file": (name, content)}, data=data, headers=headers
    )
