"""Signed webhook delivery: `X-Whisper-Signature: t=<unix>,v1=<hex HMAC-SHA256(t.body)>`."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from serve_app.security.netguard import pinned_request

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Whisper-Signature"
DEFAULT_TOLERANCE_S = 300


class SignatureError(ValueError):
    """The signature is missing, malformed, wrong or too old."""


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Raise SignatureError unless `header` signs `body` with `secret` recently enough."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError) as exc:
        raise SignatureError("malformed signature header") from exc
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise SignatureError("signature timestamp outside the tolerance (replay?)")
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, given):
        raise SignatureError("signature mismatch")


@dataclass
class DeliveryAttempt:
    attempt: int
    status_code: int | None
    ok: bool
    error: str | None


async def deliver(
    url: str,
    body: bytes,
    secret: str | None,
    *,
    attempts: int,
    timeout_s: float,
    on_attempt: Callable[[DeliveryAttempt], Awaitable[None]],
    base_delay_s: float = 1.0,
    check_url: Callable[[str], list[str]] | None = None,
) -> bool:
    """POST `body` until a 2xx answer or `attempts` run out; exponential backoff between.

    `check_url` vets the URL on every attempt and returns the addresses it approved; the
    request then goes to the first of those, so DNS cannot be re-bound in between. Both it
    and `on_attempt` may block (DNS, the store), so neither runs on the event loop itself.
    """
    headers = {"content-type": "application/json", "user-agent": "whisper-serve-webhook/1"}
    for attempt in range(1, attempts + 1):
        status: int | None = None
        error: str | None = None
        try:
            addresses = await asyncio.to_thread(check_url, url) if check_url is not None else []
            if secret:
                headers[SIGNATURE_HEADER] = sign(secret, body)
            async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
                if addresses:
                    request = pinned_request(
                        client, url, addresses[0], method="POST", content=body, headers=headers
                    )
                    response = await client.send(request)
                else:
                    response = await client.post(url, content=body, headers=headers)
            status = response.status_code
            ok = 200 <= status < 300
        except (httpx.HTTPError, ValueError) as exc:
            ok, error = False, f"{type(exc).__name__}: {exc}"
        await on_attempt(DeliveryAttempt(attempt, status, ok, error))
        if ok:
            return True
        if attempt < attempts:
            await asyncio.sleep(min(base_delay_s * 2 ** (attempt - 1), 60))
    logger.warning("webhook to %s failed after %d attempts", url, attempts)
    return False
