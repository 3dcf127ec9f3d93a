"""Per-tenant vocabularies: CRUD, tenant isolation, spellings in text, words and srt."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from serve_app.config import AppConfig
from serve_app.inference.replica import ModelReplica
from serve_app.pipeline.vocabulary import Spelling, apply_spellings, rewrite_text
from serve_app.results import Segment, Word
from serve_app.security.keys import create_key
from serve_app.testing import LocalStack
from tests.unit.conftest import LOOP, assert_error, stack_config

# tiny.en hears hello.wav's "Hello world" as hello + world; rewrite both ways of it.
SPELLING = {"from": ["hello world", "hello, world"], "to": "HelloWorld™"}


@pytest_asyncio.fixture(loop_scope="session")
async def auth_stack(tmp_path: Path, replica: ModelReplica) -> AsyncIterator[LocalStack]:
    base = stack_config(tmp_path).model_dump()
    config = AppConfig.model_validate({**base, "auth": {"enabled": True}})
    async with LocalStack(config, replicas={"tiny.en": replica}) as entered:
        yield entered


def _headers(stack: LocalStack, tenant: str) -> dict[str, str]:
    assert stack.jobs is not None
    key, _ = create_key(stack.jobs.store, tenant, f"{tenant}-key")
    return {"authorization": f"Bearer {key}"}


def test_rewrite_text_is_whole_word_and_case_insensitive():
    spellings = [Spelling(("comfy ui", "comfy eye"), "ComfyUI")]
    assert (
        rewrite_text("We run Comfy-UI and comfy eye.", spellings) == "We run ComfyUI and ComfyUI."
    )
    assert rewrite_text("comfy uix", spellings) == "comfy uix"


def test_words_spelling_a_phrase_merge_into_one():
    words = [Word(0.0, 0.4, " comfy", 0.9), Word(0.4, 0.8, " eye.", 0.5), Word(0.9, 1, " ok", 1)]
    seg = Segment(1, 0, 0.0, 1.0, " comfy eye. ok", [], -0.2, 1.0, 0.0, 0.0, words)
    (out,) = apply_spellings([seg], [{"from": ["comfy eye"], "to": "ComfyUI"}])
    assert out.text == " ComfyUI. ok"
    assert [(w.word, w.start, w.end) for w in out.words or []] == [
        (" ComfyUI.", 0.0, 0.8),
        (" ok", 0.9, 1),
    ]
    assert (out.words or [])[0].probability == 0.5


@LOOP
async def test_crud_and_tenant_isolation(auth_stack, data_dir):
    async with (
        auth_stack.http(_headers(auth_stack, "acme")) as acme,
        auth_stack.http(_headers(auth_stack, "globex")) as globex,
    ):
        created = await acme.post(
            "/v1/vocabularies", json={"name": "demo", "terms": ["ComfyUI"], "spellings": [SPELLING]}
        )
        assert created.status_code == 201, created.text
        vocab = created.json()
        assert vocab["terms"] == ["ComfyUI"] and vocab["spellings"] == [SPELLING]
        path = f"/v1/vocabularies/{vocab['id']}"
        assert (await acme.get(path)).json() == vocab
        assert [v["id"] for v in (await acme.get("/v1/vocabularies")).json()["data"]] == [
            vocab["id"]
        ]
        # Another tenant can neither read, list, use nor delete it.
        assert_error(await globex.get(path), 404, "vocabulary_not_found")
        assert (await globex.get("/v1/vocabularies")).json()["data"] == []
        audio = (data_dir / "hello.wav").read_bytes()
        used = await globex.post(
            "/v1/audio/transcriptions",
            files={"file": ("a.wav", audio)},
            data={"vocabulary": vocab["id"]},
        )
        assert_error(used, 404, "vocabulary_not_found")
        job = await globex.post(
            "/v1/jobs", files={"file": ("a.wav", audio)}, data={"vocabulary": vocab["id"]}
        )
        assert_error(job, 404, "vocabulary_not_found")
        assert_error(await globex.delete(path), 404)
        assert (await acme.get(path)).status_code == 200
        # Its owner deletes it; then it is gone for everyone.
        assert (await acme.delete(path)).status_code == 204
        assert_error(await acme.get(path), 404)
        assert_error(await acme.delete(path), 404)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"terms": ["x"]}, "name"),
        ({"name": "n", "terms": ["t"] * 51}, "terms"),
        ({"name": "n", "terms": ["x" * 65]}, "terms"),
        ({"name": "n", "terms": ["y" * 60] * 14}, "terms"),
        ({"name": "n", "spellings": [{"from": [], "to": "x"}]}, "spellings"),
        ({"name": "n", "spellings": [{"from": ["a"]}]}, "spellings"),
        ({"name": "n", "spellings": [{"from": ["a"], "to": "b"}] * 101}, "spellings"),
        ({"name": "n", "colour": "blue"}, "colour"),
    ],
)
@LOOP
async def test_size_limits_are_400s(client, body: dict[str, Any], field: str):
    response = await client.post("/v1/vocabularies", json=body)
    assert_error(response, 400, "bad_request")
    assert field in response.json()["error"]["message"]


@LOOP
async def test_spellings_rewrite_text_words_and_srt(client, data_dir):
    created = await client.post("/v1/vocabularies", json={"name": "hw", "spellings": [SPELLING]})
    vocab_id = created.json()["id"]
    audio = (data_dir / "hello.wav").read_bytes()

    async def ask(**fields: str):
        return await client.post(
            "/v1/audio/transcriptions",
            files={"file": ("a.wav", audio)},
            data={"vocabulary": vocab_id, **fields},
        )

    text = (await ask()).json()["text"]
    assert "HelloWorld™" in text and "hello world" not in text.lower(), text
    verbose = (
        await ask(response_format="verbose_json", **{"timestamp_granularities[]": "word"})
    ).json()
    assert "HelloWorld™" in verbose["text"]
    assert any(w["word"].startswith("HelloWorld™") for w in verbose["words"]), verbose["words"]
    srt = (await ask(response_format="srt")).text
    assert "HelloWorld™" in srt, srt
    # A job names it the same way; the stored result is rewritten too.
    job = await client.post(
        "/v1/jobs", files={"file": ("a.wav", audio)}, data={"vocabulary": vocab_id}
    )
    assert job.status_code == 202, job.text
    from tests.unit.conftest import wait_job

    done = await wait_job(client, job.json()["id"])
    assert done["status"] == "succeeded", done
    result = await client.get(f"/v1/jobs/{done['id']}/result", params={"format": "srt"})
    assert "HelloWorld™" in result.text, result.text
