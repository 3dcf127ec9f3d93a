"""SSRF guard on resolved addresses, redirects and DNS pinning — no connection is ever made.

Private, link-local and metadata ranges are proven refused here, on the address check, with
an injected resolver and sockets that fail loudly if anything tries to connect. The
end-to-end refusals against loopback canaries are in test_security_inputs.py.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import httpx
import pytest

from serve_app.errors import BadRequest, PayloadTooLarge
from serve_app.security.netguard import (
    Resolver,
    check_url,
    fetch,
    is_public_address,
    pinned_request,
)

BLOCKED = [
    "127.0.0.1",
    "127.255.255.254",
    "0.0.0.0",
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.0.1",
    "192.168.255.255",
    "169.254.169.254",  # AWS/GCP/Azure metadata
    "169.254.0.1",
    "100.64.0.1",  # carrier-grade NAT
    "100.100.100.200",  # Alibaba metadata
    "192.0.0.192",  # Oracle metadata
    "198.18.0.1",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "fc00::1",
    "fd00:ec2::254",  # AWS metadata over IPv6
    "fe80::1",
    "fec0::1",
    "ff02::1",
    "2001:db8::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "64:ff9b::808:808"]

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(autouse=True)
def no_sockets(monkeypatch):
    """Any outbound connection attempt fails the test."""

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"a connection was attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def resolver_for(table: dict[str, list[str]]):
    calls: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return list(table[host])

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


async def fetch_via(
    url: str, resolver: Resolver, handler: Handler, *, timeout_s: float = 5
) -> bytes:
    """`fetch` of at most 1000 bytes with private addresses refused; `handler` answers every
    request in place of the network."""
    return await fetch(
        url,
        max_bytes=1000,
        timeout_s=timeout_s,
        allow_private=False,
        resolver=resolver,
        transport=httpx.MockTransport(handler),
    )


@pytest.mark.parametrize("address", BLOCKED)
def test_blocked_addresses_are_not_public(address):
    assert not is_public_address(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_public(address):
    assert is_public_address(address)


@pytest.mark.parametrize("address", BLOCKED)
def test_a_name_resolving_to_a_blocked_address_is_refused(address):
    resolve = resolver_for({"media.example": [address]})
    with pytest.raises(BadRequest, match="private"):
        check_url("https://media.example/a.mp3", allow_private=False, resolver=resolve)


def test_one_private_answer_among_public_ones_is_enough_to_refuse():
    resolve = resolver_for({"mixed.example": ["93.184.216.34", "10.0.0.7"]})
    with pytest.raises(BadRequest):
        check_url("http://mixed.example/", allow_private=False, resolver=resolve)


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://x/a", "gopher://x/", "dict://x:11211/", "http:///a", "//x/a"],
)
def test_only_http_and_https_urls(url):
    with pytest.raises(BadRequest):
        check_url(url, allow_private=True, resolver=resolver_for({}))


def test_malformed_port_is_a_bad_request():
    with pytest.raises(BadRequest):
        check_url("http://media.example:99999/", allow_private=False)


def test_allowlist_exempts_exactly_one_host_and_port():
    resolve = resolver_for({"127.0.0.1": ["127.0.0.1"]})
    allow = ["127.0.0.1:8080"]
    assert check_url(
        "http://127.0.0.1:8080/a", allow_private=False, allowlist=allow, resolver=resolve
    )
    with pytest.raises(BadRequest):
        check_url("http://127.0.0.1:8081/a", allow_private=False, allowlist=allow, resolver=resolve)


def test_pinned_request_keeps_host_and_sni():
    client = httpx.AsyncClient()
    request = pinned_request(client, "https://media.example:8443/a.mp3?x=1", "93.184.216.34")
    assert request.url.host == "93.184.216.34" and request.url.port == 8443
    assert request.url.path == "/a.mp3" and request.url.query == b"x=1"
    assert request.headers["host"] == "media.example:8443"
    assert request.extensions["sni_hostname"] == "media.example"
    v6 = pinned_request(client, "http://media.example/a", "2606:4700:4700::1111")
    assert v6.url.host == "2606:4700:4700::1111" and v6.headers["host"] == "media.example"


async def test_redirect_to_loopback_is_refused_before_any_request():
    resolve = resolver_for({"public.example": ["93.184.216.34"], "evil.example": ["127.0.0.1"]})
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"location": "http://evil.example:8080/x"})

    with pytest.raises(BadRequest, match="private"):
        await fetch_via("http://public.example/start", resolve, handler)
    assert [r.url.host for r in seen] == ["93.184.216.34"]  # the loopback hop never went out
    assert seen[0].headers["host"] == "public.example"


async def test_dns_rebinding_cannot_swap_the_checked_address():
    """The name answers public first and loopback afterwards; the fetch connects to the
    address that was checked, never looking the name up again."""
    answers = iter([["93.184.216.34"], ["127.0.0.1"], ["127.0.0.1"]])
    lookups: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        lookups.append(host)
        return next(answers)

    hosts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        return httpx.Response(200, content=b"RIFF-audio")

    body = await fetch_via("http://rebind.example/a.wav", rebinding, handler)
    assert body == b"RIFF-audio"
    assert lookups == ["rebind.example"] and hosts == ["93.184.216.34"]


async def test_fetch_caps_size_and_total_time():
    resolve = resolver_for({"public.example": ["93.184.216.34"]})

    def big(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x" * 5000)

    with pytest.raises(PayloadTooLarge):
        await fetch_via("http://public.example/big", resolve, big)

    async def drip():
        for _ in range(100):  # one byte every 0.1 s: each read is quick, the whole is not
            await asyncio.sleep(0.1)
            yield b"x"

    def slow(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=drip())

    with pytest.raises(BadRequest, match="longer than"):
        await fetch_via("http://public.example/slow", resolve, slow, timeout_s=1)


async def test_redirect_chains_are_bounded():
    resolve = resolver_for({"public.example": ["93.184.216.34"]})

    def loop(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "/again"})

    with pytest.raises(BadRequest, match="redirects"):
        await fetch_via("http://public.example/start", resolve, loop)
