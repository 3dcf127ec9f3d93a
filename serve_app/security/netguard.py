"""Outbound URL policy for URL inputs and webhooks (SSRF guard) and a bounded fetcher.

A URL is resolved once, every address it resolves to must be public, and the fetch then
connects to exactly the address that was checked (no second DNS lookup that a rebinding
name server could answer differently). Each redirect hop is checked the same way.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urljoin, urlsplit

import httpx

from serve_app.errors import BadRequest, PayloadTooLarge

_MAX_REDIRECTS = 5
Resolver = Callable[[str, int], list[str]]
# Ranges that `is_private`/`is_global` miss in some Python versions: "this network",
# carrier-grade NAT (also Alibaba's metadata 100.100.100.200), IETF protocol assignments
# (Oracle's metadata 192.0.0.192), benchmarking, and "reserved for future use".
_EXTRA_BLOCKED = [
    ipaddress.ip_network(net)
    for net in ("0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15", "240.0.0.0/4")
]
# IPv6 prefixes that carry an IPv4 address a gateway would forward to (NAT64).
_NAT64 = [ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48")]


def is_public_address(address: str) -> bool:
    """False for loopback, private, link-local (incl. cloud metadata), multicast, reserved,
    shared and IPv4-embedding IPv6 forms of any of those."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_public_address(str(embedded))
        if ip.is_site_local:
            return False
    if any(ip in net for net in _EXTRA_BLOCKED if net.version == ip.version):
        return False
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (numeric forms like 2130706433 or 0x7f.1 included)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise BadRequest(f"cannot resolve host {host!r}") from exc
    return sorted({str(info[4][0]) for info in infos})


def _split(url: str) -> tuple[str, str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadRequest("malformed URL") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("only absolute http:// and https:// URLs are accepted")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def check_url(
    url: str,
    *,
    allow_private: bool,
    allowlist: Iterable[str] = (),
    resolver: Resolver | None = None,
) -> list[str]:
    """Raise BadRequest unless `url` is http(s) and (unless allowed) resolves only to public
    addresses. Returns the addresses that were checked: connect to these and nothing else.

    `allowlist` holds 'host:port' pairs (as written in URLs) exempt from the address check.
    """
    _, host, port = _split(url)
    addresses = (resolver or resolve)(host, port)
    if not addresses:
        raise BadRequest(f"cannot resolve host {host!r}")
    exempt = allow_private or _host_port(host, port) in {a.lower() for a in allowlist}
    if not exempt and not all(is_public_address(a) for a in addresses):
        raise BadRequest("the URL points at a private, loopback or link-local address")
    return addresses


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}".lower() if ":" in host else f"{host}:{port}".lower()


def pinned_request(
    client: httpx.AsyncClient,
    url: str,
    address: str,
    *,
    method: str = "GET",
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Request:
    """A request for `url` that connects to `address`, keeping Host and TLS SNI of the URL."""
    _, host, _ = _split(url)
    original = httpx.URL(url)
    target = original.copy_with(host=address)
    merged = {**(headers or {}), "host": original.netloc.decode("ascii")}
    extensions = {"sni_hostname": host} if original.scheme == "https" else {}
    return client.build_request(
        method, target, headers=merged, content=content, extensions=extensions
    )


async def fetch(
    url: str,
    *,
    max_bytes: int,
    timeout_s: float,
    allow_private: bool,
    allowlist: Iterable[str] = (),
    resolver: Resolver | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> bytes:
    """GET `url` with every redirect re-checked and pinned; refuse bodies over `max_bytes`
    and fetches that take longer than `timeout_s` in total."""
    allowed = tuple(allowlist)
    try:
        async with asyncio.timeout(timeout_s):
            return await _fetch(
                url, max_bytes, timeout_s, allow_private, allowed, resolver, transport
            )
    except TimeoutError as exc:
        raise BadRequest(f"fetching the URL took longer than {timeout_s:.0f} s") from exc


async def _fetch(
    url: str,
    max_bytes: int,
    timeout_s: float,
    allow_private: bool,
    allowlist: tuple[str, ...],
    resolver: Resolver | None,
    transport: httpx.AsyncBaseTransport | None,
) -> bytes:
    current = url
    too_large = f"the URL's content exceeds {max_bytes} bytes"
    async with httpx.AsyncClient(
        timeout=timeout_s, follow_redirects=False, transport=transport, trust_env=False
    ) as client:
        for _ in range(_MAX_REDIRECTS + 1):
            addresses = await asyncio.to_thread(
                check_url,
                current,
                allow_private=allow_private,
                allowlist=allowlist,
                resolver=resolver,
            )
            try:
                request = pinned_request(client, current, addresses[0])
            except (httpx.InvalidURL, ValueError) as exc:
                raise BadRequest("malformed URL") from exc
            try:
                response = await client.send(request, stream=True)
                try:
                    if response.is_redirect:
                        current = urljoin(current, response.headers.get("location", ""))
                        continue
                    if response.status_code != 200:
                        raise BadRequest(f"fetching the URL gave HTTP {response.status_code}")
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > max_bytes:
                        raise PayloadTooLarge(too_large)
                    body = bytearray()
                    async for piece in response.aiter_bytes():
                        body += piece
                        if len(body) > max_bytes:
                            raise PayloadTooLarge(too_large)
                    return bytes(body)
                finally:
                    await response.aclose()
            except httpx.HTTPError as exc:
                raise BadRequest(f"could not fetch the URL: {type(exc).__name__}") from exc
    raise BadRequest("too many redirects")
