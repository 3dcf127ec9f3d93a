"""Python client for the job API: submit, follow progress, fetch results."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from serve_app.client.live import LiveClient

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class JobError(RuntimeError):
    """A job ended without a result, or the service refused a request."""

    def __init__(self, message: str, job: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.job = job


class JobsClient:
    """Thin, typed wrapper over `/v1/jobs`; `api_key` is sent as a Bearer token."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._http = httpx.Client(
            base_url=self._base_url, headers=headers, timeout=timeout, transport=transport
        )

    def live(
        self,
        audio: str | Path,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        *,
        speed: float = 1.0,
        **session: Any,
    ) -> list[str]:
        """Stream a file to `/v1/realtime` at `speed` x real time; the turns' transcripts.

        `session`: `model`, `language`, `prompt`, `vad` (see `LiveClient`); `on_event` sees
        every server event as it arrives (deltas, completed turns, errors).
        """
        client = LiveClient(self._base_url, api_key=self._api_key, **session)
        return client.stream_file(audio, on_event, speed=speed)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> JobsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(
        self,
        audio: str | Path | bytes,
        *,
        model: str | None = None,
        language: str | None = None,
        task: str = "transcribe",
        word_timestamps: bool = False,
        pack: bool = True,
        priority: int | None = None,
        webhook_url: str | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        diarize: bool = False,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
        known_speakers: dict[str, str | Path | bytes] | None = None,
        multichannel: bool = False,
    ) -> dict[str, Any]:
        """Upload audio (a path or bytes) as a job; returns the job view.

        `known_speakers` maps names to short reference clips (paths or bytes), sent as
        data URLs in `known_speaker_references[]`.
        """
        if isinstance(audio, bytes):
            name, content = "audio", audio
        else:
            name, content = Path(audio).name, Path(audio).read_bytes()
        fields: dict[str, str] = {
            "task": task,
            "word_timestamps": str(word_timestamps).lower(),
            "pack": str(pack).lower(),
        }
        optional = {"model": model, "language": language, "webhook_url": webhook_url}
        fields |= {k: v for k, v in optional.items() if v is not None}
        if priority is not None:
            fields["priority"] = str(priority)
        if diarize or known_speakers:
            fields["diarize"] = "true"
        if multichannel:
            fields["multichannel"] = "true"
        counts = {"num_speakers": num_speakers, "min_speakers": min_speakers}
        counts["max_speakers"] = max_speakers
        fields |= {k: str(v) for k, v in counts.items() if v is not None}
        form: dict[str, Any] = dict(fields)
        if known_speakers:
            form["known_speaker_names[]"] = list(known_speakers)
            form["known_speaker_references[]"] = [
                "data:application/octet-stream;base64,"
                + base64.b64encode(c if isinstance(c, bytes) else Path(c).read_bytes()).decode()
                for c in known_speakers.values()
            ]
        if metadata:
            fields["metadata"] = json.dumps(metadata)
        headers = {"idempotency-key": idempotency_key} if idempotency_key else {}
        response = self._http.post(
            "/v1/jobs", files={"file": (name, content)}, data=form, headers=headers
        )
        return _json(response)

    def submit_url(self, url: str, **options: Any) -> dict[str, Any]:
        return _json(self._http.post("/v1/jobs", json={"url": url, **options}))

    def get(self, job_id: str) -> dict[str, Any]:
        return _json(self._http.get(f"/v1/jobs/{job_id}"))

    def list(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit} | ({"status": status} if status else {})
        return _json(self._http.get("/v1/jobs", params=params))["data"]

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        """Cancel a queued or running job (its view comes back); an ended job is deleted
        with its audio and result (None comes back)."""
        response = self._http.delete(f"/v1/jobs/{job_id}")
        if response.status_code == 204:
            return None
        return _json(response)

    def result(self, job_id: str, fmt: str = "json") -> Any:
        response = self._http.get(f"/v1/jobs/{job_id}/result", params={"format": fmt})
        if fmt in ("json", "verbose_json"):
            return _json(response)
        _raise_for(response)
        return response.text

    def events(self, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Server-sent events until `done`."""
        with self._http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=None) as response:
            _raise_for(response)
            kind = None
            for line in response.iter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and kind:
                    data = json.loads(line.split(":", 1)[1])
                    yield kind, data
                    if kind == "done":
                        return

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        poll_s: float = 0.5,
    ) -> dict[str, Any]:
        """Block until the job ends; calls `on_progress` with each new job view."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last: tuple[Any, ...] | None = None
        while True:
            job = self.get(job_id)
            marker = (job["status"], job["done_chunks"], job["total_chunks"])
            if on_progress is not None and marker != last:
                on_progress(job)
                last = marker
            if job["status"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']}")
            time.sleep(poll_s)

    def transcribe(self, audio: str | Path | bytes, **options: Any) -> dict[str, Any]:
        """Submit, wait and return the verbose_json result; raises JobError on failure."""
        job = self.submit(audio, **options)
        final = self.wait(job["id"])
        if final["status"] != "succeeded":
            raise JobError(f"job {final['id']} {final['status']}: {final.get('error')}", final)
        return self.result(final["id"], "verbose_json")


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    response.read()
    try:
        error = response.json()["error"]
        message = f"{response.status_code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        message = f"{response.status_code}: {response.text[:200]}"
    raise JobError(message)


def _json(response: httpx.Response) -> Any:
    _raise_for(response)
    return response.json()
