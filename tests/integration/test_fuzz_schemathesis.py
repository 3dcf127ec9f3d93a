"""Schemathesis against the OpenAPI schema of a deployed app (auth on, a valid key):
a bounded, derandomized run per operation finds no 5xx and no response-schema violation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.test_security_helpers import SecurityApp, deploy_security_app

pytestmark = pytest.mark.integration

# URL fields are pointed at a loopback literal: the guard refuses it without any lookup,
# where a random host name would make the service ask DNS (traffic off this machine).
_URL_FIELDS = ("url", "webhook_url")
_SAFE_URL = "http://127.0.0.1:9/fuzz.wav"


@pytest.fixture(scope="module")
def fuzz_app(request, ray_instance, model_cache) -> Iterator[SecurityApp]:
    overrides = {
        "auth": {"enabled": True},
        "rate_limit": {"enabled": True, "default": {"requests_per_s": 1000.0, "burst": 1000}},
        "limits": {"max_upload_bytes": 1024 * 1024, "max_audio_duration_s": 60},
        "jobs": {"allow_private_urls": False, "max_attempts": 1},
    }
    yield from deploy_security_app(request, ray_instance, model_cache, "sec-fuzz", overrides)


@pytest.fixture(scope="module")
def fuzz_key(fuzz_app: SecurityApp) -> str:
    return fuzz_app.create_key("tenant-fuzz", "fuzz")


def _defuse_urls(case: Any) -> None:
    if isinstance(case.body, dict):
        for name in _URL_FIELDS:
            if name in case.body:
                case.body[name] = _SAFE_URL


def _fuzz(operation: Any, mode: GenerationMode, examples: int, app: SecurityApp, key: str):
    """One bounded, derandomized Hypothesis run for one operation (the schemathesis pytest
    plugin's lazy fixtures do not work with this pytest, so the loop is spelled out)."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        _defuse_urls(case)
        case.call_and_validate(
            base_url=app.url,
            headers={"authorization": f"Bearer {key}"},
            checks=[
                not_a_server_error,
                response_schema_conformance,
                status_code_conformance,
                content_type_conformance,
            ],
            timeout=60,
        )

    run()


def test_api_answers_generated_requests_within_its_schema(fuzz_app, fuzz_key):
    schema = schemathesis.openapi.from_url(f"{fuzz_app.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 16
    # The decode knobs, vocabularies and usage (issue 15) are in the schema, so they are fuzzed.
    labels = {operation.label for operation in operations}
    assert {
        "POST /v1/vocabularies",
        "GET /v1/usage",
        "DELETE /v1/vocabularies/{vocabulary_id}",
    } <= labels
    raw = httpx.get(f"{fuzz_app.url}/openapi.json", timeout=30).json()
    form = raw["components"]["schemas"]["TranscriptionForm"]["properties"]
    for field in ("hotwords", "beam_size", "chunking_strategy", "suppress_tokens", "include[]"):
        assert field in form, field
    failures: dict[str, str] = {}
    for operation in operations:
        for mode, examples in ((GenerationMode.POSITIVE, 25), (GenerationMode.NEGATIVE, 10)):
            try:
                _fuzz(operation, mode, examples, fuzz_app, fuzz_key)
            except Unsatisfiable:
                assert mode == GenerationMode.NEGATIVE  # nothing to break in /healthz & co
            # Schemathesis raises a BaseExceptionGroup of its findings; collect every
            # operation's, then report them all at once.
            except (Exception, BaseExceptionGroup) as exc:
                failures[f"{operation.label} ({mode.value})"] = str(exc)[:3000]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
