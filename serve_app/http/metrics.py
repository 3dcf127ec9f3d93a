"""Request metrics middleware and `GET /metrics` (the metric families: serve_app.observability).

`GET /metrics` re-serves the whisper_* families plus Ray Serve's own `ray_serve_*` (replica
counts, autoscaling targets, latencies) by scraping every alive node's metrics agent and
merging the text, so one URL shows the whole cluster. Ray's agents export every few
seconds, so a figure appears there a little after the event.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterable, Sequence

import httpx
import ray
from fastapi import APIRouter, FastAPI
from fastapi.responses import PlainTextResponse
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.config import AppConfig
from serve_app.observability import RequestMetrics

# Families `GET /metrics` re-serves (Ray adds the `ray_` namespace to application metrics).
EXPORTED_PREFIXES = ("ray_whisper_", "ray_serve_")
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
NO_MODEL = "-"
# nginx's code for "the client closed the request": Ray Serve cancels the handler then, and
# counting that as 500 made Prometheus' own scrape time-outs look like server errors.
CLIENT_CLOSED = 499
# The model field of a multipart form: headers of the part, a blank line, the value.
_MULTIPART_MODEL = re.compile(rb'name="model"[^\r\n]*\r\n(?:[^\r\n]+\r\n)*\r\n([^\r\n]{0,128})\r\n')
_SNIFF_TAIL = 512  # bytes kept across body chunks so a field split between them is found
_JSON_SNIFF_LIMIT = 64 * 1024


class ModelSniffer:
    """Finds the `model` field of a multipart or JSON body as it streams past.

    The routes parse the body themselves; this only watches the chunks (a regex over each
    one, plus a short tail) so the request counter can carry the model without buffering.
    """

    def __init__(self, content_type: str) -> None:
        self.multipart = content_type.startswith("multipart/form-data")
        self.json = content_type.startswith("application/json")
        self.active = self.multipart or self.json
        self.value: str | None = None
        self._buffer = b""

    def feed(self, chunk: bytes) -> None:
        if not self.active or self.value is not None or not chunk:
            return
        if self.multipart:
            window = self._buffer + chunk
            match = _MULTIPART_MODEL.search(window)
            if match:
                self.value = match.group(1).decode("utf-8", "replace").strip()
            self._buffer = window[-_SNIFF_TAIL:]
        elif len(self._buffer) + len(chunk) <= _JSON_SNIFF_LIMIT:
            self._buffer += chunk
        else:
            self.active = False  # a huge JSON body: not worth holding for a label

    def finish(self) -> None:
        if self.json and self.active and self.value is None and self._buffer:
            try:
                body = json.loads(self._buffer)
            except ValueError:
                return
            if isinstance(body, dict) and isinstance(body.get("model"), str):
                self.value = body["model"]


class RequestMetricsMiddleware:
    """Counts every request by route template (not raw path), method, model and status.

    Outermost user middleware, so refusals by the upload limit are counted too; an
    exception that escapes the app counts as 500, a request cancelled because its client
    went away before an answer as 499.
    """

    def __init__(
        self,
        app: ASGIApp,
        config: AppConfig,
        recorder: RequestMetrics | None = None,
        routes: Sequence[BaseRoute] = (),
    ) -> None:
        self.app = app
        # Requests refused before routing (rate limit, upload limit) are labelled by the
        # route they would have reached, found in the app's own route table.
        self.routes = routes
        self.ids = config.model_ids()
        self.default_model = (config.resolve_model(None) or config.models[0]).name
        self.recorder = recorder or RequestMetrics()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        sniffer = ModelSniffer(_header(scope, b"content-type"))
        status: int | None = None

        async def watching_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                sniffer.feed(message.get("body", b""))
                if not message.get("more_body", False):
                    sniffer.finish()
            return message

        async def watching_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        cancelled = False
        try:
            await self.app(scope, watching_receive, watching_send)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            self.recorder.observe(
                self._route(scope),
                scope.get("method", ""),
                self._model(scope, sniffer),
                status or (CLIENT_CLOSED if cancelled else 500),
                time.perf_counter() - started,
            )

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            route = next((r for r in self.routes if r.matches(scope)[0] == Match.FULL), None)
        return getattr(route, "path", None) or "unmatched"

    def _model(self, scope: Scope, sniffer: ModelSniffer) -> str:
        requested = scope.get("path_params", {}).get("model_id") or sniffer.value
        if requested:
            return self.ids.get(requested, "unknown")  # bounded label values
        return self.default_model if sniffer.active else NO_MODEL


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1").lower()
    return ""


# ---- GET /metrics ------------------------------------------------------------------------


def merge_exposition(texts: Iterable[str], prefixes: tuple[str, ...] = EXPORTED_PREFIXES) -> str:
    """Merge Prometheus text from several agents into one exposition, keeping `prefixes`.

    Each family keeps one HELP/TYPE header and the samples of every node, so a strict
    parser does not see the same family twice.
    """
    headers: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for text in texts:
        family = ""
        for line in text.splitlines():
            if line.startswith(("# HELP ", "# TYPE ")):
                family = line.split(" ", 3)[2]
                if family.startswith(prefixes):
                    header = headers.setdefault(family, [])
                    if not any(h.startswith(line[:7]) for h in header):
                        header.append(line)
                continue
            if not line or line.startswith("#"):
                continue
            name = re.split(r"[{ ]", line, maxsplit=1)[0]
            owner = family if family and name.startswith(family) else name
            if owner.startswith(prefixes):
                samples.setdefault(owner, []).append(line)
    out: list[str] = []
    for family in sorted(set(headers) | set(samples)):
        out.extend(headers.get(family, []))
        out.extend(samples.get(family, []))
    return "\n".join(out) + "\n"


async def scrape_ray_metrics(timeout_s: float = 5.0) -> tuple[str, list[str]]:
    """Fetch every alive node's metrics agent; returns (merged text, failures)."""
    nodes = await asyncio.to_thread(ray.nodes)
    local_ip = ray.util.get_node_ip_address()
    targets = []
    for node in nodes:
        port = int(node.get("MetricsExportPort") or 0)
        if not node.get("Alive") or port <= 0:
            continue
        # The agent listens on every interface; nodes on this host are reached on loopback.
        host = node["NodeManagerAddress"]
        targets.append(f"http://{'127.0.0.1' if host == local_ip else host}:{port}/metrics")
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        replies = await asyncio.gather(
            *(client.get(url) for url in targets), return_exceptions=True
        )
    texts, failures = [], []
    for url, reply in zip(targets, replies, strict=True):
        if isinstance(reply, httpx.Response) and reply.status_code == 200:
            texts.append(reply.text)
        else:
            failures.append(url)
    return merge_exposition(texts), failures


def metrics_router() -> APIRouter:
    """`GET /metrics`: the cluster's whisper_* and ray_serve_* metrics as Prometheus text."""
    router = APIRouter(tags=["operations"])

    @router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def prometheus_metrics() -> PlainTextResponse:
        text, failures = await scrape_ray_metrics()
        notes = "".join(f"# scrape failed: {url}\n" for url in failures)
        return PlainTextResponse(notes + text, media_type=PROMETHEUS_TEXT)

    return router


def install_observability(app: FastAPI, config: AppConfig) -> None:
    """Request metrics on every route (call after the other middlewares) + `GET /metrics`."""
    app.add_middleware(RequestMetricsMiddleware, config=config, routes=app.router.routes)
    app.include_router(metrics_router())
