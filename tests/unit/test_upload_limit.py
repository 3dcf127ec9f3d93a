"""The upload limit refuses bodies while they stream, with the JSON error body."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import FastAPI, File, UploadFile
from fastapi.testclient import TestClient

from serve_app.http.errors import install_error_handlers
from serve_app.http.middleware import UploadLimitMiddleware


def _app(limit: int) -> FastAPI:
    app = FastAPI()
    app.add_middleware(UploadLimitMiddleware, max_bytes=limit)
    install_error_handlers(app)

    @app.post("/upload")
    async def upload(file: Annotated[UploadFile, File()]) -> dict:
        return {"size": len(await file.read())}

    return app


def test_small_upload_passes():
    client = TestClient(_app(10_000))
    response = client.post("/upload", files={"file": ("a.bin", b"x" * 5000)})
    assert response.status_code == 200 and response.json() == {"size": 5000}


def test_declared_oversize_is_refused_before_reading():
    client = TestClient(_app(1000))
    response = client.post("/upload", files={"file": ("a.bin", b"x" * 5000)})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_chunked_oversize_is_refused_while_streaming():
    consumed = 0

    def body():
        nonlocal consumed
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
        for _ in range(100):
            consumed += 1
            yield b"y" * 1000

    client = TestClient(_app(10_000))
    response = client.post(
        "/upload", content=body(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_the_upload_cap_counts_bodies_streaming_in_not_requests_being_served():
    """With a cap of 1, a request whose body is in keeps running while the next one streams."""

    async def scenario() -> list[int]:
        release = asyncio.Event()
        statuses: list[int] = []

        async def app(scope, receive, send) -> None:
            while (await receive()).get("more_body"):
                pass
            if scope["path"] == "/slow":
                await release.wait()  # served long after its body was read
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        guard = UploadLimitMiddleware(app, max_bytes=1000, max_uploads=1)

        async def call(path: str) -> None:
            scope = {
                "type": "http",
                "method": "POST",
                "path": path,
                "headers": [(b"content-length", b"3")],
                "client": ("127.0.0.1", 5000),
            }

            async def receive() -> dict:
                return {"type": "http.request", "body": b"abc", "more_body": False}

            async def send(message: dict) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])

            await guard(scope, receive, send)

        slow = asyncio.create_task(call("/slow"))
        await asyncio.sleep(0.05)
        await call("/fast")  # the slow one holds no upload slot any more
        release.set()
        await slow
        return statuses

    assert asyncio.run(scenario()) == [200, 200]
