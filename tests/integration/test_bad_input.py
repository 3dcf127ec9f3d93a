"""Bad input gets a clear 4xx JSON error; the service keeps serving."""

from __future__ import annotations

import io

import pytest

from tests.integration.conftest import transcribe

pytestmark = pytest.mark.integration


def _post(http, content: bytes, name: str = "audio.wav", **data):
    return http.post(
        "/v1/audio/transcriptions", files={"file": (name, io.BytesIO(content))}, data=data
    )


def _assert_error(response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code


def test_empty_file(http):
    _assert_error(_post(http, b""), 400, "empty_file")


def test_non_audio_bytes(http):
    _assert_error(_post(http, bytes(range(256)) * 40), 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "payload",
    [b"<!doctype html><html><body>hi</body></html>", b"#EXTM3U\n#EXTINF:10,\nhttp://x/a.ts\n"],
)
def test_text_disguised_as_wav(http, payload):
    _assert_error(_post(http, payload, "song.wav"), 415)


def test_truncated_audio(http, data_dir):
    data = (data_dir / "story.flac").read_bytes()
    wav = (data_dir / "train.wav").read_bytes()
    _assert_error(_post(http, wav[: len(wav) // 3]), 422, "undecodable_audio")
    response = _post(http, data[:40], "story.flac")
    assert 400 <= response.status_code < 500, response.text


def test_unknown_model(http, data_dir):
    _assert_error(
        transcribe(http, data_dir / "hello.wav", model="large-v9"), 400, "model_not_found"
    )


def test_bad_response_format(http, data_dir):
    _assert_error(transcribe(http, data_dir / "hello.wav", response_format="docx"), 400)


def test_bad_parameters(http, data_dir):
    _assert_error(transcribe(http, data_dir / "hello.wav", temperature="7"), 400)
    _assert_error(transcribe(http, data_dir / "hello.wav", model="base", language="xx"), 400)
    # timestamp_granularities[] with json is ignored, as OpenAI does; a bad value is a 400.
    _assert_error(
        transcribe(http, data_dir / "hello.wav", **{"timestamp_granularities[]": "minute"}), 400
    )
    _assert_error(transcribe(http, data_dir / "hello.wav", beam_size="11"), 400)
    _assert_error(transcribe(http, data_dir / "hello.wav", chunking_strategy="manual"), 400)
    _assert_error(http.post("/v1/audio/transcriptions", data={"model": "tiny.en"}), 400)
    with (data_dir / "hello.wav").open("rb") as handle:
        response = http.post(
            "/v1/audio/translations", files={"file": handle}, data={"model": "tiny.en"}
        )
    _assert_error(response, 400)


def test_oversized_upload_is_refused_while_streaming(http, whisper_app):
    limit = whisper_app.config.limits.max_upload_bytes
    sent = 0
    total = limit * 10

    def chunked_body():
        nonlocal sent
        head = (
            b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\n"
        )
        yield head
        chunk = b"\1" * (256 * 1024)
        while sent < total:
            sent += len(chunk)
            yield chunk

    # Declared length over the limit: refused before the body is read.
    status, raw = _raw_post(whisper_app.url, limit + 1, b"--x\r\n" * 8)
    assert status == 413 and b"payload_too_large" in raw
    # Chunked body with no length: refused once the running total passes the limit.
    response = http.post(
        "/v1/audio/transcriptions",
        content=chunked_body(),
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    _assert_error(response, 413, "payload_too_large")


def _raw_post(url: str, declared: int, first_bytes: bytes) -> tuple[int, bytes]:
    """Send headers promising `declared` bytes but only a few; read what comes back."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        head = (
            "POST /v1/audio/transcriptions HTTP/1.1\r\n"
            f"Host: {parts.hostname}\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\n"
            f"Content-Length: {declared}\r\n\r\n"
        )
        sock.sendall(head.encode() + first_bytes)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 20:
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
    status = int(data.split(b" ", 2)[1])
    return status, data


def test_silence_gives_empty_text(http):
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\0\0" * 16000 * 2)
    response = _post(http, buffer.getvalue())
    assert response.status_code == 200 and response.json()["text"] == ""


def test_service_still_serves_after_bad_input(http, data_dir):
    response = transcribe(http, data_dir / "hello.wav", model="tiny.en")
    assert response.status_code == 200 and "hello" in response.json()["text"].lower()
