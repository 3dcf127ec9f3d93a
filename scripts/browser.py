"""Headless Chromium over the DevTools protocol: open a page, wait for its text, save a PNG.

Used by `scripts/dashboard_check.py` (Ray's dashboard), `tests/integration/test_docs_browser.py`
(`/docs` offline) and `scripts/grafana_render.py` (the dashboard screenshot). Loopback only:
background networking is off and every host name but 127.0.0.1 fails to resolve, so a page
that needs the internet shows it by staying blank.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--window-size=1600,1000",
    # Only loopback: every host name fails to resolve; the dashboard is addressed by IP.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


class DevTools:
    """A minimal Chrome DevTools protocol client over one page's websocket."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0
        self.requests: list[str] = []
        self.failed: list[str] = []
        self._urls: dict[str, str] = {}

    def _note(self, message: dict[str, Any]) -> None:
        """Network events that arrive between answers: what the page fetched, what failed."""
        params = message.get("params", {})
        if message.get("method") == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "")
            self._urls[params.get("requestId", "")] = url
            self.requests.append(url)
        elif message.get("method") == "Network.loadingFailed":
            self.failed.append(self._urls.get(params.get("requestId", ""), "?"))

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        ident = self.next_id
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json()
            self._note(message)
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    async def text(self) -> str:
        result = await self.call(
            "Runtime.evaluate", expression="document.body ? document.body.innerText : ''"
        )
        return str(result.get("result", {}).get("value", ""))


def devtools_port(profile: Path, timeout_s: float) -> int:
    """Chromium writes the port it picked (--remote-debugging-port=0) into the profile dir."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if marker.exists() and marker.read_text().strip():
            return int(marker.read_text().splitlines()[0])
        time.sleep(0.2)
    raise RuntimeError("Chromium did not open its DevTools port")


async def screenshot(
    url: str,
    out: Path,
    expect: list[str],
    chromium: str,
    timeout_s: float,
    settle_s: float = 2.0,
    full_page: bool = False,
) -> dict[str, Any]:
    """Open `url`, wait until its text contains every string in `expect`, save a PNG.

    Also reports the URLs the page requested (`requests`) and those that failed (`failed`)."""
    import aiohttp

    profile = Path(tempfile.mkdtemp(prefix="chromium-"))
    proc = subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port = devtools_port(profile, 60)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            page = next(t for t in targets if t.get("type") == "page")
            async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                tools = DevTools(ws)
                await tools.call("Page.enable")
                await tools.call("Network.enable")
                await tools.call("Page.navigate", url=url)
                deadline = time.monotonic() + timeout_s
                text = ""
                while time.monotonic() < deadline:
                    text = await tools.text()
                    if all(item in text for item in expect):
                        break
                    await asyncio.sleep(1)
                await asyncio.sleep(settle_s)  # let charts and status chips finish rendering
                extra: dict[str, Any] = {}
                if full_page:  # the whole document, not just the 1600x1000 viewport
                    size = (await tools.call("Page.getLayoutMetrics"))["cssContentSize"]
                    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"]}
                    extra = {"clip": {**clip, "scale": 1}, "captureBeyondViewport": True}
                shot = await tools.call("Page.captureScreenshot", format="png", **extra)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(base64.b64decode(shot["data"]))
                text = await tools.text()
        return {
            "missing": [item for item in expect if item not in text],
            "text": text[:4000],
            "requests": tools.requests,
            "failed": tools.failed,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)
