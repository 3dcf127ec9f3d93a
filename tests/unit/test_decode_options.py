"""The decode knobs of the one options type: validation, batch keys and batch sharing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from serve_app.errors import BadRequest
from serve_app.options import Caller, TranscribeOptions, VadSettings
from serve_app.pipeline.decode import decode_audio
from tests.unit.conftest import LOOP, assert_error

# Options that change nothing a replica decodes: they must never split a batch.
NON_DECODE: list[dict[str, Any]] = [
    {"best_of": 2},
    {"condition_on_previous_text": True},
    {"compression_ratio_threshold": 50.0, "log_prob_threshold": -50.0},
    {"no_speech_threshold": 0.99},
    {"temperature_fallback": [0.2, 0.4]},
    {"chunking_strategy": {"type": "server_vad", "threshold": 0.4}},
    {"vad_filter": False},
    {"pack": False},
]
# Options that change the decode: each must get its own batch key.
DECODE: list[dict[str, Any]] = [
    {"hotwords": "ComfyUI"},
    {"beam_size": 2},
    {"patience": 2.0},
    {"length_penalty": 0.5},
    {"repetition_penalty": 1.2},
    {"no_repeat_ngram_size": 3},
    {"temperature": 0.3},
    {"suppress_blank": False},
    {"suppress_tokens": [-1, 50]},
    {"max_new_tokens": 20},
    {"prompt": "Hello."},
]
# (field, bad value): each gets a 400 whose message names the field.
BAD: list[tuple[str, Any]] = [
    ("hotwords", "x" * 1001),
    ("beam_size", "11"),
    ("beam_size", "wide"),
    ("best_of", "0"),
    ("patience", "0"),
    ("length_penalty", "-1"),
    ("repetition_penalty", "0"),
    ("no_repeat_ngram_size", "-2"),
    ("temperature", "1.5"),
    ("temperature_fallback", "0.2,3"),
    ("compression_ratio_threshold", "-1"),
    ("log_prob_threshold", "2"),
    ("no_speech_threshold", "1.5"),
    ("condition_on_previous_text", "maybe"),
    ("suppress_blank", "perhaps"),
    ("suppress_tokens", "-5"),
    ("suppress_tokens", "a,b"),
    ("max_new_tokens", "0"),
    ("max_new_tokens", "9999"),
    ("vad_filter", "sometimes"),
    ("chunking_strategy", "manual"),
    ("chunking_strategy", '{"type": "server_vad", "threshold": 2}'),
    ("chunking_strategy", '{"type": "semantic"}'),
    ("include[]", "tokens"),
]


def test_defaults_are_the_batched_pipelines():
    decode = TranscribeOptions().decode_options()
    assert (decode.beam_size, decode.patience, decode.length_penalty) == (5, 1.0, 1.0)
    assert decode.suppress_tokens == (-1,) and decode.suppress_blank is True
    assert decode.hotwords is None and decode.max_new_tokens is None
    assert TranscribeOptions().vad_settings() == VadSettings(0.5, 400, 160)
    assert not TranscribeOptions().fallback_policy().active


@pytest.mark.parametrize("fields", NON_DECODE, ids=lambda f: ",".join(f))
def test_non_decode_options_keep_the_batch_key(fields):
    default = TranscribeOptions().decode_options().batch_key()
    assert TranscribeOptions(**fields).decode_options().batch_key() == default


@pytest.mark.parametrize("fields", DECODE, ids=lambda f: ",".join(f))
def test_decode_options_change_the_batch_key(fields):
    default = TranscribeOptions().decode_options().batch_key()
    assert TranscribeOptions(**fields).decode_options().batch_key() != default


def test_list_shapes_from_forms_and_faster_whisper():
    options = TranscribeOptions.parse({"temperature": [0.0, 0.2, 0.4]})
    assert options.temperature == 0.0 and options.temperature_fallback == (0.2, 0.4)
    assert TranscribeOptions.parse({"temperature": "0.1,0.5"}).temperature_fallback == (0.5,)
    assert TranscribeOptions.parse({"suppress_tokens": "-1, 50"}).suppress_tokens == (-1, 50)
    assert TranscribeOptions.parse({"suppress_tokens[]": ["7"]}).suppress_tokens == (7,)
    vad = TranscribeOptions.parse(
        {"chunking_strategy[type]": "server_vad", "chunking_strategy[prefix_padding_ms]": "300"}
    ).vad_settings()
    assert vad == VadSettings(threshold=0.5, speech_pad_ms=300, min_silence_duration_ms=160)
    assert TranscribeOptions.parse({"chunking_strategy": "auto"}).vad_settings() == VadSettings()
    assert TranscribeOptions.parse({"vad_filter": False}).vad_settings() is None


def test_parse_names_the_field():
    with pytest.raises(BadRequest, match="beam_size"):
        TranscribeOptions.parse({"beam_size": 0})
    with pytest.raises(BadRequest, match="chunking_strategy"):
        TranscribeOptions.parse({"vad_filter": False, "chunking_strategy": {"type": "server_vad"}})


@LOOP
async def test_bad_values_are_400s_naming_the_field(client, data_dir):
    audio = (data_dir / "hello.wav").read_bytes()
    for field, value in BAD:
        response = await client.post(
            "/v1/audio/transcriptions", files={"file": ("a.wav", audio)}, data={field: value}
        )
        assert_error(response, 400, "bad_request")
        assert field.removesuffix("[]") in response.json()["error"]["message"], (field, value)
        job = await client.post("/v1/jobs", files={"file": ("a.wav", audio)}, data={field: value})
        if field != "include[]":  # a response field of the sync routes only
            assert_error(job, 400, "bad_request")
            assert field in job.json()["error"]["message"], (field, value)


@LOOP
async def test_unknown_form_fields_are_ignored(client, data_dir):
    response = await client.post(
        "/v1/audio/transcriptions",
        files={"file": ("a.wav", (data_dir / "hello.wav").read_bytes())},
        data={"some_future_field": "1", "another[key]": "x"},
    )
    assert response.status_code == 200, response.text


async def _batch_sizes(stack, audio: list, options: list[TranscribeOptions]) -> list[list[int]]:
    """Prepare every request first, then send all their chunks at once, so that batching
    depends on the options alone and not on which request finished its VAD first."""
    service = stack.service
    prepared = await asyncio.gather(
        *(
            service.prepare(a, o, Caller(tenant=f"t{i}"))
            for i, (a, o) in enumerate(zip(audio, options, strict=True))
        )
    )
    for p in prepared:  # VAD goes on after prepare returns
        await p.feed.complete()

    async def run(p) -> list[int]:
        results = {i: r async for i, r in service.run_chunks(p)}
        return service.assemble(p, results).batch_sizes

    return list(await asyncio.gather(*(run(p) for p in prepared)))


@LOOP
async def test_options_that_do_not_change_the_decode_share_one_batch(stack, data_dir):
    clips = ["hello.wav", "weather.wav", "numbers.wav", "kitchen.wav"]
    samples = [decode_audio((data_dir / c).read_bytes(), max_duration_s=60).samples for c in clips]
    variants = [
        TranscribeOptions(),
        TranscribeOptions(best_of=2, condition_on_previous_text=True),
        TranscribeOptions(compression_ratio_threshold=50.0, chunking_strategy="auto"),
        TranscribeOptions(chunking_strategy={"type": "server_vad", "prefix_padding_ms": 400}),
    ]
    assert await _batch_sizes(stack, samples, variants) == [[4]] * 4
    # ...and options that do change it decode in batches of their own.
    split = [TranscribeOptions(), TranscribeOptions(beam_size=2)] * 2
    assert await _batch_sizes(stack, samples, split) == [[2]] * 4
