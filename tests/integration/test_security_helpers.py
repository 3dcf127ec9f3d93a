"""Shared pieces of the security suites (no tests here): a deployed app on the real stack,
loopback canary servers, API keys and the ingress replica's process."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import deployed
from tests.integration.jobs.conftest import jobs_app_config, real_storage


@dataclass
class SecurityApp:
    """A deployed app with Postgres + SeaweedFS + Redis storage."""

    name: str
    url: str
    config: Any

    def client(self, key: str | None = None, timeout: float = 120) -> httpx.Client:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def create_key(self, tenant: str, name: str) -> str:
        from serve_app.security.keys import create_key
        from serve_app.stores import open_job_store

        with open_job_store(self.config.storage.database_url) as store:
            key, _ = create_key(store, tenant, name)
        return key


def deploy_security_app(
    request: pytest.FixtureRequest,
    ray_instance: dict,
    model_cache: Path,
    prefix: str,
    overrides: dict[str, Any],
) -> Iterator[SecurityApp]:
    """Deploy tiny.en (ingress 0.1 CPU, transcriber 0.3, tracker 0.05) with `overrides`
    merged into the jobs suite's config; delete it and kill its tracker afterwards."""
    from serve_app.config import AppConfig

    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    raw = jobs_app_config(model_cache, "real", real_storage(request), name).model_dump()
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(raw.get(section), dict):
            raw[section] = {**raw[section], **values}
        else:
            raw[section] = values
    config = AppConfig.model_validate(raw)
    with deployed(config, name, ray_instance["http_url"]) as url:
        yield SecurityApp(name, url, config)


def ingress_process(app_name: str) -> Any:
    """The psutil.Process of the app's Ingress replica (Ray sets its process title)."""
    import psutil

    title = f"ServeReplica:{app_name}:Ingress"
    for proc in psutil.process_iter(["cmdline"]):
        if any(title in part for part in proc.info["cmdline"] or []):
            return proc
    raise AssertionError(f"no process titled {title}")


@dataclass
class Canary:
    """HTTP server on loopback (127.0.0.1, and ::1 on the same port when available) that
    records every TCP connection it accepts — so a test can prove none was made."""

    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    slow: set[str] = field(default_factory=set)
    connections: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    port: int = 0
    _servers: list[ThreadingHTTPServer] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Canary:
        handler = _handler(self)
        canary = self

        class Recording(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[socket.socket, Any]:
                conn, addr = super().get_request()
                canary.connections.append(str(addr[0]))
                return conn, addr

        first = Recording(("127.0.0.1", 0), handler)
        self.port = first.server_address[1]
        self._servers.append(first)
        try:
            v6 = type("Recording6", (Recording,), {"address_family": socket.AF_INET6})
            self._servers.append(v6(("::1", self.port), handler))
        except OSError:
            pass  # no IPv6 loopback here: [::1] URLs cannot connect anywhere at all
        for server in self._servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()


def _handler(state: Canary) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return None

        def do_GET(self) -> None:
            state.paths.append(self.path)
            if self.path in state.redirects:
                self.send_response(302)
                self.send_header("Location", state.redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path in state.slow:  # a byte every 0.5 s, forever (until the client quits)
                self.send_response(200)
                self.end_headers()
                try:
                    for _ in range(600):
                        self.wfile.write(b"\0")
                        self.wfile.flush()
                        time.sleep(0.5)
                except OSError:
                    return
            elif self.path in state.files:
                body = state.files[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        do_POST = do_GET

    return Handler
