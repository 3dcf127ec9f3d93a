"""API keys: hashing, lookup, revocation, the access middleware and the admin CLI."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serve_app.config import AppConfig, AuthConfig, RateLimitConfig
from serve_app.errors import Unauthorized
from serve_app.http.access import AccessDep
from serve_app.http.errors import install_error_handlers
from serve_app.http.middleware import AccessMiddleware
from serve_app.security import keys as auth
from serve_app.security.keys import Authenticator, create_key, generate_key, hash_key
from serve_app.security.ratelimit import RateLimiter
from serve_app.stores import JobStore, open_job_store


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    with open_job_store(f"sqlite:///{tmp_path}/jobs.db", migrate=True) as opened:
        yield opened


def _authenticator(store: JobStore, cache_s: float = 0.0, **kwargs: Any) -> Authenticator:
    config = AuthConfig(enabled=True, key_cache_s=cache_s)
    return Authenticator(config, RateLimitConfig(), store, **kwargs)


def test_auth_is_off_by_default_and_on_in_the_production_example():
    import yaml

    config = AppConfig()
    assert not config.auth.enabled and not config.rate_limit.enabled
    root = Path(__file__).parents[2]
    for name, enabled in (("serve_config.yaml", False), ("serve_config.prod.yaml", True)):
        raw = yaml.safe_load((root / name).read_text())["applications"][0]["args"]
        config = AppConfig.model_validate(raw)
        assert config.auth.enabled is enabled and config.rate_limit.enabled is enabled


def test_keys_are_random_and_stored_as_sha256(store):
    first, second = generate_key(), generate_key()
    assert first.startswith("ws_") and len(first) > 40 and first != second
    key, row = create_key(store, "acme", "ci")
    assert row.key_sha256 == hashlib.sha256(key.encode()).hexdigest() == hash_key(key)
    assert store.get_api_key_by_hash(hash_key(key)).tenant == "acme"


async def test_valid_key_maps_to_its_tenant_and_limits(store):
    key, row = create_key(store, "acme", "ci")
    limits = RateLimitConfig.model_validate({"per_key": {"ci": {"burst": 3}}})
    authenticator = Authenticator(AuthConfig(enabled=True), limits, store)
    principal = await authenticator.authenticate(f"Bearer {key}")
    assert (principal.tenant, principal.key_id, principal.key_name) == ("acme", row.id, "ci")
    assert principal.limits.burst == 3


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Basic abc", "Bearer ws_unknown", "Bearer " + "x" * 300],
)
async def test_bad_headers_get_the_same_401(store, header):
    with pytest.raises(Unauthorized) as refused:
        await _authenticator(store).authenticate(header)
    assert refused.value.message == auth.UNAUTHORIZED_MESSAGE
    assert refused.value.headers == {"WWW-Authenticate": "Bearer"}


async def test_revoked_key_is_refused_once_the_cache_expires(store):
    clock = FakeClock()
    authenticator = _authenticator(store, cache_s=5.0, clock=clock)
    key, row = create_key(store, "acme", "ci")
    await authenticator.authenticate(f"Bearer {key}")
    assert store.revoke_api_key(row.id, "acme")
    await authenticator.authenticate(f"Bearer {key}")  # still trusted from the cache
    clock.now += 5.1
    with pytest.raises(Unauthorized) as refused:
        await authenticator.authenticate(f"Bearer {key}")
    assert refused.value.message == auth.UNAUTHORIZED_MESSAGE


async def test_hashes_are_compared_in_constant_time(store, monkeypatch):
    compared: list[tuple[str, str]] = []
    real = auth.hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    key, _ = create_key(store, "acme", "ci")
    await _authenticator(store).authenticate(f"Bearer {key}")
    assert compared == [(hash_key(key), hash_key(key))]


async def test_disabled_auth_is_the_default_tenant():
    authenticator = Authenticator(AuthConfig(default_tenant="solo"), RateLimitConfig(), None)
    principal = await authenticator.authenticate("Bearer whatever")
    assert principal.tenant == "solo" and principal.key_id == auth.ANONYMOUS_KEY_ID


def test_enabled_auth_needs_a_store():
    with pytest.raises(ValueError, match="store"):
        Authenticator(AuthConfig(enabled=True), RateLimitConfig(), None)


def _app(store: JobStore, reads: list[int], limits: RateLimitConfig | None = None) -> Any:
    app = FastAPI()
    limits = limits or RateLimitConfig()
    authenticator = Authenticator(AuthConfig(enabled=True, key_cache_s=0), limits, store)
    app.add_middleware(AccessMiddleware, authenticator=authenticator, limiter=RateLimiter(limits))
    install_error_handlers(app)

    @app.post("/v1/whoami")
    async def whoami(access: AccessDep) -> dict[str, str]:
        return {"tenant": access.tenant}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    async def counting(scope, receive, send):  # counts body reads behind the middleware
        async def counted():
            message = await receive()
            if message["type"] == "http.request":
                reads.append(len(message.get("body", b"")))
            return message

        await app(scope, counted, send)

    return counting


def test_middleware_refuses_before_reading_the_body(store):
    reads: list[int] = []
    client = TestClient(_app(store, reads))
    assert client.get("/healthz").status_code == 200
    refused = client.post("/v1/whoami", content=b"x" * 50_000)
    assert refused.status_code == 401 and reads == []
    assert refused.json() == {
        "error": {"code": "unauthorized", "message": "missing or invalid API key"}
    }
    assert refused.headers["www-authenticate"] == "Bearer"
    key, _ = create_key(store, "acme", "ci")
    ok = client.post("/v1/whoami", headers={"authorization": f"Bearer {key}"})
    assert ok.status_code == 200 and ok.json() == {"tenant": "acme"}
    assert client.get("/v1/unknown").status_code == 401  # no route discovery without a key


def test_middleware_rate_limits_with_retry_after(store):
    limits = RateLimitConfig.model_validate(
        {"enabled": True, "default": {"requests_per_s": 0.01, "burst": 2}}
    )
    client = TestClient(_app(store, [], limits))
    key, _ = create_key(store, "acme", "ci")
    headers = {"authorization": f"Bearer {key}"}
    assert [client.post("/v1/whoami", headers=headers).status_code for _ in range(2)] == [200] * 2
    limited = client.post("/v1/whoami", headers=headers)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["code"] == "rate_limited"


def test_admin_cli_creates_lists_and_revokes(tmp_path, capsys):
    from serve_app.client.cli import main

    db = ["--database-url", f"sqlite:///{tmp_path}/keys.db", "--tenant", "acme"]
    assert main(["keys", "create", *db, "--name", "ci"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("ws_")
    assert main(["keys", "list", *db]) == 0
    listing = capsys.readouterr().out
    assert key not in listing and " ci " in listing and "active" in listing
    key_id = listing.split()[0]
    assert main(["keys", "revoke", *db, key_id]) == 0
    assert main(["keys", "revoke", *db, key_id]) == 2
    capsys.readouterr()
    assert main(["keys", "list", *db]) == 0
    assert "revoked" in capsys.readouterr().out
