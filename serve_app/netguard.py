"""Outbound URL policy for URL inputs and webhooks (SSRF guard) and a bounded fetcher."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urljoin, urlsplit

import httpx

from serve_app.errors import BadRequest, PayloadTooLarge

_MAX_REDIRECTS = 5
# Shared/carrier-grade NAT and other ranges `is_private` does not cover everywhere.
_EXTRA_BLOCKED = [ipaddress.ip_network("100.64.0.0/10"), ipaddress.ip_network("0.0.0.0/8")]


def is_public_address(address: str) -> bool:
    """False for loopback, private, link-local (incl. cloud metadata), multicast, reserved."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in net for net in _EXTRA_BLOCKED if net.version == ip.version):
        return False
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise BadRequest(f"cannot resolve host {host!r}") from exc
    return sorted({info[4][0] for info in infos})


def check_url(url: str, *, allow_private: bool) -> None:
    """Raise BadRequest unless `url` is http(s) and (unless allowed) resolves publicly."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("only absolute http:// and https:// URLs are accepted")
    if allow_private:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = resolve(parts.hostname, port)
    blocked = [a for a in addresses if not is_public_address(a)]
    if blocked:
        raise BadRequest("the URL points at a private, loopback or link-local address")


async def fetch(url: str, *, max_bytes: int, timeout_s: float, allow_private: bool) -> bytes:
    """GET `url` with redirects re-checked one by one; refuse bodies over `max_bytes`."""
    current = url
    async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
        for _ in range(_MAX_REDIRECTS + 1):
            check_url(current, allow_private=allow_private)
            try:
                async with client.stream("GET", current) as response:
                    if response.is_redirect:
                        current = urljoin(current, response.headers.get("location", ""))
                        continue
                    if response.status_code != 200:
                        raise BadRequest(f"fetching the URL gave HTTP {response.status_code}")
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > max_bytes:
                        raise PayloadTooLarge(f"the URL's content exceeds {max_bytes} bytes")
                    body = bytearray()
                    async for piece in response.aiter_bytes():
                        body += piece
                        if len(body) > max_bytes:
                            raise PayloadTooLarge(f"the URL's content exceeds {max_bytes} bytes")
                    return bytes(body)
            except httpx.HTTPError as exc:
                raise BadRequest(f"could not fetch the URL: {type(exc).__name__}") from exc
    raise BadRequest("too many redirects")
